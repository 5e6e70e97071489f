// DNS proxy (runner.md §8, policy.md §10.6): every query that steering REDIRECTs here, over UDP
// (node:dgram, stable) or TCP (Deno.listen, 2-byte framing), is judged with the dual check on the
// resolver the client asked and the question name. Denied ⇒ REFUSED; allowed ⇒ forwarded from a
// socket of egress's own (its cgroup is exempt from steering) to that resolver, or to
// --dns-upstream, and the answer relayed unchanged after its A/AAAA answers fed the DNS cache.
//
// Where the original resolver comes from: the NFQUEUE consumer saw the query before NAT and left a
// rendezvous entry (src/dns/rendezvous.ts); on a miss, conntrack by the reply tuple
// (DnsOriginResolver); still unknown ⇒ deny with `original destination unknown`.

import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";
import type { Enforcer } from "../policy/enforcer.ts";
import type { Policy } from "../policy/policy.ts";
import type { ConnectionEvent, Decision } from "../policy/types.ts";
import type { ProcessInfo } from "../proc/process_info.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import { DnsTcpDeframer, frameDnsTcp, readDnsQuestions } from "../proto/dns_detect.ts";
import type { Rendezvous, RendezvousScope } from "./rendezvous.ts";
import { UdpSocket } from "../udp/udp_socket.ts";
import {
  type ExpectedQuestion,
  sameQuestion,
  UdpUpstreamPool,
  type UdpUpstreamPoolOptions,
} from "./upstream_pool.ts";
import {
  addDecisionFields,
  addProcessFields,
  type ConnectionLogSink,
  type OperationalSink,
  silentOperationalLog,
  withProcess,
} from "./decision_log.ts";

export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_REFUSED = 5;
const DEFAULT_TIMEOUT_MS = 5000;
const MAX_IN_FLIGHT = 2048;
const MAX_TCP_CONNECTIONS = 512;
/** A TCP client that sends no complete query for this long is closed. */
const TCP_IDLE_MS = 10_000;

/** Where a query was going before the REDIRECT, and who sent it. */
export type DnsOrigin = {
  dstIp: string;
  dstPort: number;
  /** the client's source port before NAT */
  srcPort: number;
  process?: ProcessInfo;
};

export type UdpClient = { ip: string; port: number };
export type TcpEndpoints = { peerIp: string; peerPort: number; localIp: string; localPort: number };

/** Fallback when the rendezvous has no entry (the default uses conntrack and attribution). */
export interface DnsOriginResolver {
  udp(client: UdpClient, proxyPort: number): Promise<DnsOrigin | undefined>;
  tcp(connection: TcpEndpoints): Promise<DnsOrigin | undefined>;
}

export type Upstream = { ip: string; port: number };

/** Minimal byte stream (Deno.Conn satisfies it). */
export interface ByteStream {
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
}

export type DnsProxyOptions = {
  /** --dns-port; 0 picks a free port (tests) */
  port: number;
  /** listen address (default 0.0.0.0: the REDIRECT of forwarded traffic lands on interface addresses) */
  hostname?: string;
  getEnforcer: () => Enforcer;
  getPolicy?: () => Policy | undefined;
  rendezvous: Rendezvous;
  log: ConnectionLogSink;
  oplog?: OperationalSink;
  /** --dns-upstream: send allowed queries here instead of to the resolver the client asked */
  upstreams?: Upstream[];
  origins?: DnsOriginResolver;
  /** whether a client address is this namespace's own (rendezvous scope) */
  isLocal: (ip: string) => boolean;
  audit?: boolean;
  /** upstream answer deadline (default 5000 ms), then SERVFAIL */
  timeoutMs?: number;
  /** serve UDP / TCP (both by default) */
  udp?: boolean;
  tcp?: boolean;
  /** the long-lived upstream UDP sockets (src/dns/upstream_pool.ts) */
  upstreamPool?: UdpUpstreamPoolOptions;
};

/** Parses `IP[:PORT]` of --dns-upstream (port 53 by default). */
export function parseUpstream(text: string): Upstream {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(text);
  const port = match?.[2] === undefined ? 53 : Number(match[2]);
  if (!match || match[1].split(".").some((octet) => Number(octet) > 255) || port < 1 || port > 65535) {
    throw new Error(`Cannot use DNS upstream ${JSON.stringify(text)}: expected IPv4[:PORT]`);
  }
  return { ip: match[1], port };
}

/** A response carrying only the header and the query's question section, with `rcode`. */
export function errorResponse(
  query: Uint8Array,
  rcode: number,
  questionEnd: number,
  questionCount: number,
): Uint8Array {
  const end = Math.min(Math.max(questionEnd, 12), query.length);
  const out = new Uint8Array(end);
  out.set(query.subarray(0, end));
  // QR=1, opcode and RD kept, AA/TC cleared, RA=1, Z/AD/CD cleared, RCODE.
  out[2] = 0x80 | (query[2] & 0x79);
  out[3] = 0x80 | (rcode & 0x0f);
  out[4] = questionCount >> 8;
  out[5] = questionCount & 0xff;
  for (let i = 6; i < 12; i++) out[i] = 0;
  return out;
}

type Answers = { ips: string[]; minTtl: number };

/** A and AAAA answer IPs and their minimum TTL (0 without any); undefined if unparseable. */
export function answersOf(response: Uint8Array): Answers | undefined {
  let decoded: dnsPacket.Packet;
  try {
    decoded = dnsPacket.decode(Buffer.from(response.buffer, response.byteOffset, response.byteLength));
  } catch {
    return undefined;
  }
  const ips: string[] = [];
  let minTtl = Infinity;
  for (const answer of decoded.answers ?? []) {
    if ((answer.type === "A" || answer.type === "AAAA") && typeof answer.data === "string") {
      ips.push(answer.data);
      const ttl = typeof answer.ttl === "number" ? answer.ttl : 0;
      if (ttl < minTtl) minTtl = ttl;
    }
  }
  return { ips, minTtl: ips.length === 0 ? 0 : minTtl };
}

function normalizeIpv4(ip: string): string {
  return ip.toLowerCase().startsWith("::ffff:") ? ip.slice(7) : ip;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function writeAll(stream: ByteStream, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const written = await stream.write(bytes.subarray(offset));
    if (written <= 0) throw new Error("wrote 0 bytes");
    offset += written;
  }
}

type Outcome = { response?: Uint8Array; kind: "answer" | "refused" | "formerr" | "servfail" | "dropped" };

export class DnsProxy {
  readonly #options: DnsProxyOptions;
  readonly #oplog: OperationalSink;
  readonly #timeoutMs: number;
  readonly #audit: boolean;
  /** Receiving sockets; a reply always leaves through the socket its query arrived on. */
  #udpSockets: UdpSocket[] = [];
  #tcp: Deno.Listener | undefined;
  #pool: UdpUpstreamPool | undefined;
  readonly #tcpConnections = new Set<ByteStream>();
  #inFlight = 0;
  #closed = false;
  #lastDropWarning = -Infinity;
  #droppedSinceWarning = 0;
  /** counters for status and tests */
  readonly stats = { queries: 0, allowed: 0, refused: 0, formerr: 0, servfail: 0, dropped: 0 };

  private constructor(options: DnsProxyOptions) {
    this.#options = options;
    this.#oplog = options.oplog ?? silentOperationalLog;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#audit = options.audit === true;
  }

  /** Binds the UDP socket and TCP listener; throws "Cannot start DNS proxy: …" if either fails. */
  static async start(options: DnsProxyOptions): Promise<DnsProxy> {
    const proxy = new DnsProxy(options);
    const hostname = options.hostname ?? "0.0.0.0";
    try {
      if (options.udp !== false) {
        proxy.#pool = new UdpUpstreamPool(options.upstreamPool);
        // A query REDIRECTed in OUTPUT lands on 127.0.0.1, but a wildcard socket would answer from
        // the address routing picks for the client (e.g. the host's own address), which conntrack
        // cannot map back: the client would never see the reply. So a wildcard listener also gets a
        // loopback socket on the same port; forwarded queries (REDIRECTed in PREROUTING to the
        // interface address) are answered by the wildcard socket from that address.
        const hosts = hostname === "0.0.0.0" ? ["127.0.0.1", "0.0.0.0"] : [hostname];
        let port = options.port;
        for (const host of hosts) {
          const socket: UdpSocket = UdpSocket.bind(host, port, (message, ip, clientPort) => {
            proxy.#onUdpQuery(socket, message, { ip, port: clientPort });
          }, { reuseAddr: hosts.length > 1 });
          proxy.#udpSockets.push(socket);
          port = socket.port;
          socket.finished.catch((error) => {
            if (!proxy.#closed) {
              proxy.#oplog.error(`DNS proxy stopped receiving on ${host}:${port}: ${describe(error)}`);
            }
          });
        }
      }
      if (options.tcp !== false) {
        // Same port as UDP when one was picked, so `port: 0` gives one port for both.
        const udp = proxy.#udpSockets[0];
        const port = options.port === 0 && udp ? udp.port : options.port;
        proxy.#tcp = Deno.listen({ hostname, port, transport: "tcp" });
        proxy.#acceptLoop(proxy.#tcp);
      }
    } catch (error) {
      await proxy.close();
      throw new Error(`Cannot start DNS proxy on ${hostname}:${options.port}: ${describe(error)}`);
    }
    return proxy;
  }

  /** The UDP port (or the TCP one when UDP is off). */
  get port(): number {
    const udp = this.#udpSockets[0];
    if (udp) return udp.port;
    const address = this.#tcp?.addr as Deno.NetAddr | undefined;
    return address?.port ?? 0;
  }

  /** Stops listening and closes open TCP clients. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const sockets = this.#udpSockets;
    this.#udpSockets = [];
    await Promise.all(sockets.map((socket) => socket.close()));
    try {
      this.#tcp?.close();
    } catch {
      // already closed
    }
    for (const connection of this.#tcpConnections) {
      try {
        connection.close();
      } catch {
        // already closed
      }
    }
    this.#tcpConnections.clear();
    await this.#pool?.close();
  }

  /** The upstream pool's counters (answers ignored as unknown or mismatched, rotations). */
  get upstreamStats(): UdpUpstreamPool["stats"] | undefined {
    return this.#pool?.stats;
  }

  // ------------------------------------------------------------------ UDP

  #onUdpQuery(socket: UdpSocket, query: Uint8Array, client: UdpClient): void {
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      this.#noteDrop(`too many queries in flight (${MAX_IN_FLIGHT})`);
      return;
    }
    this.#inFlight++;
    this.#answerUdp(socket, query, client).finally(() => this.#inFlight--);
  }

  async #answerUdp(socket: UdpSocket, query: Uint8Array, client: UdpClient): Promise<void> {
    try {
      const outcome = await this.#judge(
        query,
        "udp",
        async (id, name) => await this.#udpOrigin(client, id, name),
      );
      if (outcome.response && !this.#closed && !socket.send(outcome.response, client.ip, client.port)) {
        this.#noteDrop(`cannot send the answer to ${client.ip}:${client.port}`);
      }
    } catch (error) {
      this.#oplog.error(`Cannot handle DNS query from ${client.ip}:${client.port}: ${describe(error)}`);
    }
  }

  async #udpOrigin(client: UdpClient, id: number, name: string): Promise<DnsOrigin | undefined> {
    const scope: RendezvousScope = this.#options.isLocal(client.ip) ? "netns" : "source";
    const key = { scope, clientIp: client.ip, clientPort: client.port, id, name };
    const entry = this.#options.rendezvous.take(key);
    if (entry) {
      return {
        dstIp: entry.resolverIp,
        dstPort: entry.resolverPort,
        srcPort: client.port,
        process: entry.process,
      };
    }
    const origin = await this.#options.origins?.udp(client, this.port);
    if (origin && !origin.process && origin.srcPort !== client.port) {
      // NAT remapped the client port: the consumer recorded the query under the original one.
      const remapped = this.#options.rendezvous.take({ ...key, clientPort: origin.srcPort });
      if (remapped) return { ...origin, process: remapped.process };
    }
    return origin;
  }

  // ------------------------------------------------------------------ TCP

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept() as Deno.TcpConn;
      } catch (error) {
        if (!this.#closed) this.#oplog.error(`Cannot accept DNS-over-TCP connection: ${describe(error)}`);
        return;
      }
      if (this.#tcpConnections.size >= MAX_TCP_CONNECTIONS) {
        this.#noteDrop(`too many DNS-over-TCP connections (${MAX_TCP_CONNECTIONS})`);
        conn.close();
        continue;
      }
      this.#serveTcp(conn);
    }
  }

  async #serveTcp(conn: Deno.TcpConn): Promise<void> {
    const peer = conn.remoteAddr as Deno.NetAddr;
    const local = conn.localAddr as Deno.NetAddr;
    try {
      conn.setNoDelay(true);
    } catch {
      // not fatal
    }
    const endpoints: TcpEndpoints = {
      peerIp: normalizeIpv4(peer.hostname),
      peerPort: peer.port,
      localIp: normalizeIpv4(local.hostname),
      localPort: local.port,
    };
    let origin: DnsOrigin | undefined;
    try {
      origin = await this.#options.origins?.tcp(endpoints);
    } catch (error) {
      this.#oplog.warn(`Cannot find the original destination of DNS-over-TCP client: ${describe(error)}`);
    }
    await this.handleDnsOverTcp(conn, new Uint8Array(0), origin, endpoints.peerPort);
  }

  /**
   * Serves one DNS-over-TCP connection whose first bytes were already read (the TCP proxy calls
   * this for DNS detected on another port). `original` undefined ⇒ every query is denied with
   * `original destination unknown`. Closes the connection when done.
   */
  async handleDnsOverTcp(
    conn: ByteStream,
    firstBytes: Uint8Array,
    original: DnsOrigin | undefined,
    clientPort = original?.srcPort ?? 0,
  ): Promise<void> {
    this.#tcpConnections.add(conn);
    const deframer = new DnsTcpDeframer();
    const buffer = new Uint8Array(16 * 1024);
    const origin = original ? { ...original, srcPort: original.srcPort || clientPort } : undefined;
    try {
      let pending = firstBytes.length > 0 ? deframer.push(firstBytes) : [];
      for (;;) {
        for (const query of pending) {
          const outcome = await this.#judge(query, "tcp", () => Promise.resolve(origin));
          if (outcome.response) await writeAll(conn, frameDnsTcp(outcome.response));
        }
        const n = await readWithTimeout(conn, buffer, TCP_IDLE_MS);
        if (n === null) break;
        pending = deframer.push(buffer.subarray(0, n));
      }
    } catch (error) {
      if (!this.#closed) this.#oplog.debug(`DNS-over-TCP connection ended: ${describe(error)}`);
    } finally {
      this.#tcpConnections.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  // ------------------------------------------------------------------ judging

  /**
   * One query → what to answer. `findOrigin` is asked once the id and name are known (the UDP
   * rendezvous is keyed by them). Never throws for bad input: malformed queries are dropped.
   */
  async #judge(
    query: Uint8Array,
    transport: "udp" | "tcp",
    findOrigin: (id: number, name: string) => Promise<DnsOrigin | undefined>,
  ): Promise<Outcome> {
    this.stats.queries++;
    const questions = readDnsQuestions(query);
    if (questions.kind !== "ok") {
      return this.#drop(`malformed DNS query over ${transport}: ${questions.reason}`);
    }
    if (questions.flags & 0x8000) return this.#drop(`DNS response received as a query over ${transport}`);
    try {
      dnsPacket.decode(Buffer.from(query.buffer, query.byteOffset, query.byteLength));
    } catch (error) {
      return this.#drop(`unparseable DNS query over ${transport}: ${describe(error)}`);
    }
    const name = questions.questions[0]?.name ?? "";
    let origin: DnsOrigin | undefined;
    try {
      origin = await findOrigin(questions.id, name);
    } catch (error) {
      this.#oplog.warn(`Cannot find the original destination of a DNS query: ${describe(error)}`);
    }
    const base: ConnectionLogEvent = {
      type: "dns",
      dst_ip: origin?.dstIp ?? "unknown",
      dst_port: origin?.dstPort ?? 0,
      src_port: origin?.srcPort ?? 0,
      name,
    };

    if (questions.questionCount !== 1) {
      const noQuestion = questions.questionCount === 0;
      this.#writeDeny(base, noQuestion ? "no question" : "multiple questions", origin?.process);
      const rcode = noQuestion ? RCODE_FORMERR : RCODE_REFUSED;
      if (noQuestion) this.stats.formerr++;
      else this.stats.refused++;
      return {
        response: errorResponse(query, rcode, questions.end, questions.questions.length),
        kind: noQuestion ? "formerr" : "refused",
      };
    }
    const refused = (): Outcome => {
      this.stats.refused++;
      return { response: errorResponse(query, RCODE_REFUSED, questions.end, 1), kind: "refused" };
    };

    const upstreams = this.#options.upstreams ?? [];
    let decision: Decision;
    if (!origin) {
      decision = {
        allowed: false,
        policy: "deny",
        passthrough: false,
        insecure: false,
        reason: "original destination unknown",
      };
      // Audit mode never blocks, but without a destination only a configured upstream can answer.
      if (this.#audit && upstreams.length > 0) decision = { ...decision, allowed: true };
    } else {
      const event: ConnectionEvent = withProcess(
        { type: "dns", dst_ip: origin.dstIp, dst_port: origin.dstPort, name },
        origin.process,
      );
      try {
        decision = this.#options.getEnforcer().decide(event);
      } catch (error) {
        // decide() itself never throws; getting the enforcer might (a broken reload).
        this.#oplog.error(`Cannot judge DNS query for ${JSON.stringify(name)}: ${describe(error)}`);
        decision = {
          allowed: false,
          policy: "deny",
          passthrough: false,
          insecure: false,
          reason: `internal error: ${describe(error)}`,
        };
      }
    }
    const policy = this.#options.getPolicy?.();
    const line = addProcessFields(
      addDecisionFields({ ...base }, decision, policy, this.#audit),
      origin?.process,
    );
    this.#options.log.write(line);
    if (!decision.allowed) return refused();

    const targets = upstreams.length > 0 ? upstreams : [{ ip: origin!.dstIp, port: origin!.dstPort }];
    const response = await this.#forward(query, questions.questions[0], targets, transport);
    if (!response) {
      this.stats.servfail++;
      return { response: errorResponse(query, RCODE_SERVFAIL, questions.end, 1), kind: "servfail" };
    }
    const answers = answersOf(response) ?? { ips: [], minTtl: 0 };
    // Only what enforce mode would have resolved fills the cache, so audit logs stay truthful.
    if (decision.policy === "allow" && answers.ips.length > 0) {
      try {
        this.#options.getEnforcer().recordDnsResponse(name, answers.ips, answers.minTtl);
      } catch (error) {
        // Relaying is still safe: connections to these IPs are judged without the name (fail closed).
        this.#oplog.error(`Cannot record DNS answers for ${JSON.stringify(name)}: ${describe(error)}`);
      }
    }
    const responseLine: ConnectionLogEvent = {
      type: "dns_response",
      dst_ip: base.dst_ip,
      dst_port: base.dst_port,
      src_port: base.src_port,
      name,
      answers: answers.ips,
      ttl: answers.minTtl,
    };
    addDecisionFields(responseLine, decision, policy, this.#audit);
    this.#options.log.write(addProcessFields(responseLine, origin?.process));
    this.stats.allowed++;
    return { response, kind: "answer" };
  }

  #writeDeny(base: ConnectionLogEvent, reason: string, process: ProcessInfo | undefined): void {
    const line: ConnectionLogEvent = { ...base, policy: "deny", reason };
    if (this.#audit) line.audit = true;
    this.#options.log.write(addProcessFields(line, process));
  }

  #drop(message: string): Outcome {
    this.stats.dropped++;
    this.#noteDrop(message);
    return { kind: "dropped" };
  }

  /** Operational-log line for a dropped query, at most one per 10 s with a count of the rest. */
  #noteDrop(message: string): void {
    const now = Date.now();
    if (now - this.#lastDropWarning < 10_000) {
      this.#droppedSinceWarning++;
      return;
    }
    const more = this.#droppedSinceWarning > 0 ? ` (${this.#droppedSinceWarning} more dropped before)` : "";
    this.#lastDropWarning = now;
    this.#droppedSinceWarning = 0;
    this.#oplog.warn(`DNS query dropped: ${message}${more}`);
  }

  /** Tries the targets in order within the deadline; the answer, or undefined (⇒ SERVFAIL). */
  async #forward(
    query: Uint8Array,
    question: ExpectedQuestion,
    targets: Upstream[],
    transport: "udp" | "tcp",
  ): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + this.#timeoutMs;
    const share = Math.max(1, Math.floor(this.#timeoutMs / targets.length));
    const failures: string[] = [];
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i];
      const left = deadline - Date.now();
      if (left <= 0) break;
      const budget = i === targets.length - 1 ? left : Math.min(share, left);
      if (target.port === this.port && this.#options.isLocal(target.ip)) {
        failures.push(`${target.ip}:${target.port}: is this proxy`);
        continue;
      }
      try {
        return transport === "udp"
          ? await this.#pool!.query(query, question, target, budget)
          : await forwardTcp(query, question, target, budget);
      } catch (error) {
        failures.push(`${target.ip}:${target.port}: ${describe(error)}`);
      }
    }
    this.#oplog.warn(`DNS upstream failed over ${transport}: ${failures.join("; ") || "no time left"}`);
    return undefined;
  }
}

/**
 * One query over a fresh TCP connection (its own port and connection: no id remapping needed);
 * resolves with the first framed response with the query's id and question.
 */
async function forwardTcp(
  query: Uint8Array,
  question: ExpectedQuestion,
  target: Upstream,
  timeoutMs: number,
): Promise<Uint8Array> {
  let conn: Deno.TcpConn | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn?.close();
    } catch {
      // already closed
    }
  }, timeoutMs);
  try {
    conn = await withTimeout(Deno.connect({ hostname: target.ip, port: target.port }), timeoutMs);
    conn.setNoDelay(true);
    await writeAll(conn, frameDnsTcp(query));
    const deframer = new DnsTcpDeframer();
    const buffer = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("connection closed before an answer");
      for (const message of deframer.push(buffer.subarray(0, n))) {
        if (
          message.length >= 12 && message[0] === query[0] && message[1] === query[1] &&
          (message[2] & 0x80) && sameQuestion(message, question)
        ) {
          return message;
        }
      }
    }
  } catch (error) {
    throw timedOut ? new Error(`no answer within ${timeoutMs} ms`) : error;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // already closed
    }
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function readWithTimeout(
  conn: ByteStream,
  buffer: Uint8Array,
  timeoutMs: number,
): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const idle = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  try {
    return await Promise.race([conn.read(buffer), idle]);
  } finally {
    clearTimeout(timer);
  }
}
