// The sidecar DNS proxy (sidecar.md §2): 127.0.0.1:<port> (and ::1 when it exists), UDP and TCP.
// Judged by name only; denied ⇒ NXDOMAIN; allowed ⇒ forwarded to the fixed upstreams (never to the
// address the client chose) and the answer's addresses handed to `onAnswer` (the nft sets) before
// the reply goes out. No upstream answer within the deadline ⇒ SERVFAIL.
//
// Unlike the runner-mode proxy (src/dns/), there is no resolver check, no process attribution,
// and denial is NXDOMAIN rather than REFUSED; only the wire helpers of src/proto are shared.

import * as dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";
import { DnsTcpDeframer, frameDnsTcp, readDnsQuestions } from "../proto/dns_detect.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import type { Family } from "./address.ts";
import { parseAddress } from "./address.ts";
import type { NameVerdict } from "./policy.ts";
import { queryUpstream, type Upstream } from "./upstream.ts";

export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;

export type AnswerAddress = { family: Family; value: bigint; text: string };

export type DnsProxyHooks = {
  judge(name: string): NameVerdict;
  /** Called for allowed answers before the reply is sent; a throw turns the reply into SERVFAIL. */
  onAnswer(name: string, verdict: NameVerdict, addresses: AnswerAddress[], ttl: number): Promise<void>;
  log(event: ConnectionLogEvent): void;
  warn(message: string): void;
};

export type DnsProxyOptions = {
  port: number;
  upstreams: Upstream[];
  mark: number;
  timeoutMs?: number;
  /** allowed queries forwarded at the same time; more ⇒ SERVFAIL at once (default 256) */
  maxInFlight?: number;
  /** TCP clients at the same time (default MAX_TCP_CLIENTS); more are closed at once */
  maxTcpClients?: number;
  /** idle TCP clients are closed after this long (default TCP_IDLE_MS) */
  tcpIdleMs?: number;
  hooks: DnsProxyHooks;
};

/**
 * Bounds on what the app can make the proxy hold: each forwarded query owns a socket and a poll
 * thread for up to the timeout, each TCP client a socket. Without them a flood from the app (which
 * shares the namespace) exhausts the sidecar's descriptors, and with them the policy API.
 */
export const DEFAULT_MAX_IN_FLIGHT = 256;
export const MAX_TCP_CLIENTS = 128;
/** A TCP client that sends no complete query for this long is closed (RFC 7766 suggests seconds). */
export const TCP_IDLE_MS = 10_000;

export type DnsCounters = { dns_queries: number; dns_denied: number };

/**
 * A reply carrying only the header and question section of `query`, with `rcode`
 * (QR, RA set; opcode and RD copied). Undefined when the query cannot be read.
 */
export function errorReply(query: Uint8Array, rcode: number): Uint8Array | undefined {
  const read = readDnsQuestions(query);
  if (read.kind !== "ok") {
    if (query.length < 12) return undefined;
    const header = query.slice(0, 12);
    header[2] = 0x80 | (query[2] & 0x79);
    header[3] = 0x80 | RCODE_FORMERR;
    header.fill(0, 4, 12);
    return header;
  }
  const reply = query.slice(0, read.end);
  reply[2] = 0x80 | (query[2] & 0x79); // QR, opcode, RD (AA and TC cleared)
  reply[3] = 0x80 | (rcode & 0x0f); // RA
  reply[4] = read.questions.length >> 8;
  reply[5] = read.questions.length & 0xff;
  reply.fill(0, 6, 12);
  return reply;
}

type DecodedAnswer = { type?: string; ttl?: number; data?: unknown };

/** A/AAAA addresses of an upstream reply (CNAME chains count for the query name) and the min TTL. */
export function answerAddresses(
  reply: Uint8Array,
): { rcode: number; addresses: AnswerAddress[]; ttl: number } {
  const rcode = reply.length >= 4 ? reply[3] & 0x0f : RCODE_SERVFAIL;
  let answers: DecodedAnswer[] = [];
  try {
    answers = (dnsPacket.decode(Buffer.from(reply)).answers ?? []) as DecodedAnswer[];
  } catch {
    return { rcode, addresses: [], ttl: 0 };
  }
  const addresses: AnswerAddress[] = [];
  let ttl = Infinity;
  for (const answer of answers) {
    if ((answer.type !== "A" && answer.type !== "AAAA") || typeof answer.data !== "string") continue;
    const parsed = parseAddress(answer.data);
    if (parsed === undefined || parsed.family !== (answer.type === "A" ? 4 : 6)) continue;
    addresses.push({ ...parsed, text: answer.data });
    ttl = Math.min(ttl, answer.ttl ?? 0);
  }
  return { rcode, addresses, ttl: Number.isFinite(ttl) ? ttl : 0 };
}

export class SidecarDnsProxy {
  readonly counters: DnsCounters = { dns_queries: 0, dns_denied: 0 };
  readonly #options: DnsProxyOptions;
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  #inFlight = 0;
  #capWarnedAt = 0;
  #udp: dgram.Socket[] = [];
  #tcp: Deno.TcpListener[] = [];
  #conns = new Set<Deno.TcpConn>();
  #closed = false;

  constructor(options: DnsProxyOptions) {
    this.#options = options;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  }

  /** Binds 127.0.0.1 (required) and ::1 (when the namespace has it), UDP and TCP. */
  async start(): Promise<void> {
    const port = this.#options.port;
    await this.#bindUdp("udp4", "127.0.0.1", port);
    this.#tcp.push(Deno.listen({ hostname: "127.0.0.1", port, transport: "tcp" }));
    try {
      await this.#bindUdp("udp6", "::1", port);
      this.#tcp.push(Deno.listen({ hostname: "::1", port, transport: "tcp" }));
    } catch (error) {
      this.#options.hooks.warn(`DNS proxy: not listening on [::1]:${port}: ${(error as Error).message}`);
    }
    for (const listener of this.#tcp) this.#acceptLoop(listener);
  }

  get listening(): boolean {
    return !this.#closed && this.#udp.length > 0;
  }

  #bindUdp(type: "udp4" | "udp6", address: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket({ type, ipv6Only: type === "udp6" });
      socket.once("error", reject);
      socket.bind(port, address, () => {
        socket.off("error", reject);
        socket.on("error", (error) => this.#options.hooks.warn(`DNS proxy UDP error: ${error.message}`));
        socket.on("message", (message, remote) => {
          this.handle(new Uint8Array(message), remote.port).then((reply) => {
            if (reply !== undefined && !this.#closed) socket.send(reply, remote.port, remote.address);
          }).catch((error) => this.#options.hooks.warn(`DNS proxy: ${(error as Error).message}`));
        });
        this.#udp.push(socket);
        resolve();
      });
    });
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        if (this.#conns.size >= (this.#options.maxTcpClients ?? MAX_TCP_CLIENTS)) {
          conn.close();
          continue;
        }
        this.#serveTcp(conn);
      }
    } catch (error) {
      if (!this.#closed) this.#options.hooks.warn(`DNS proxy TCP accept failed: ${(error as Error).message}`);
    }
  }

  async #serveTcp(conn: Deno.TcpConn): Promise<void> {
    this.#conns.add(conn);
    const deframer = new DnsTcpDeframer();
    const clientPort = (conn.remoteAddr as Deno.NetAddr).port;
    const idleMs = this.#options.tcpIdleMs ?? TCP_IDLE_MS;
    let idle = setTimeout(() => conn.close(), idleMs);
    try {
      for await (const chunk of conn.readable) {
        for (const message of deframer.push(chunk)) {
          clearTimeout(idle);
          idle = setTimeout(() => conn.close(), idleMs);
          const reply = await this.handle(message, clientPort);
          if (reply === undefined) continue;
          const framed = frameDnsTcp(reply);
          for (let offset = 0; offset < framed.length;) offset += await conn.write(framed.subarray(offset));
        }
      }
    } catch {
      // client went away (or closed for idling)
    } finally {
      clearTimeout(idle);
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /** Judges one query and produces the reply (exported for tests). */
  async handle(query: Uint8Array, clientPort = 0): Promise<Uint8Array | undefined> {
    const read = readDnsQuestions(query);
    if (read.kind !== "ok" || (read.flags & 0x8000) !== 0) return undefined; // not a query: ignore
    if (read.questions.length !== 1) return errorReply(query, RCODE_FORMERR);
    const { hooks, upstreams } = this.#options;
    const name = read.questions[0].name;
    this.counters.dns_queries++;
    const verdict = hooks.judge(name);
    const first = upstreams[0];
    const ruleFields = verdict.entry !== undefined
      ? { rule: verdict.entry.entry.source ?? verdict.entry.entry.target, line: verdict.entry.index + 1 }
      : {};
    if (verdict.policy === "deny") {
      this.counters.dns_denied++;
      hooks.log({
        type: "dns",
        dst_ip: first?.address,
        dst_port: first?.port,
        src_port: clientPort,
        name,
        policy: "deny",
        ...ruleFields,
        reason: verdict.reason ?? "name not allowed",
      });
      return errorReply(query, RCODE_NXDOMAIN);
    }

    if (this.#inFlight >= this.#maxInFlight) {
      // one warning per burst, not one per refused query
      if (Date.now() - this.#capWarnedAt > 10_000) {
        this.#capWarnedAt = Date.now();
        hooks.warn(`DNS proxy: ${this.#maxInFlight} queries in flight, answering SERVFAIL ("${name}")`);
      }
      return errorReply(query, RCODE_SERVFAIL);
    }
    this.#inFlight++;
    try {
      return await this.#forward(query, name, verdict, clientPort, ruleFields);
    } finally {
      this.#inFlight--;
    }
  }

  async #forward(
    query: Uint8Array,
    name: string,
    verdict: NameVerdict,
    clientPort: number,
    ruleFields: { rule?: string; line?: number },
  ): Promise<Uint8Array | undefined> {
    const { hooks, upstreams, mark } = this.#options;
    const deadline = Date.now() + this.#timeoutMs;
    const message = new Uint8Array(query);
    let reply: Uint8Array | undefined;
    let used: Upstream | undefined;
    for (let i = 0; i < upstreams.length && reply === undefined; i++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      // Leave the later upstreams a share of the deadline.
      const share = i === upstreams.length - 1 ? remaining : Math.max(500, Math.floor(remaining / 2));
      used = upstreams[i];
      try {
        reply = await queryUpstream(used, message, mark, share);
      } catch (error) {
        hooks.warn(`DNS upstream ${used.address}:${used.port} failed: ${(error as Error).message}`);
      }
      if (reply === undefined) {
        hooks.warn(`DNS upstream ${used.address}:${used.port} did not answer "${name}"`);
      }
    }
    const logged: ConnectionLogEvent = {
      type: "dns",
      dst_ip: used?.address,
      dst_port: used?.port,
      src_port: clientPort,
      name,
      policy: "allow",
      ...ruleFields,
    };
    if (reply === undefined) {
      hooks.log(logged);
      return errorReply(query, RCODE_SERVFAIL);
    }
    const answer = answerAddresses(reply);
    try {
      if (answer.addresses.length > 0) await hooks.onAnswer(name, verdict, answer.addresses, answer.ttl);
    } catch (error) {
      hooks.warn(`Cannot admit the addresses of "${name}": ${(error as Error).message}`);
      hooks.log(logged);
      return errorReply(query, RCODE_SERVFAIL);
    }
    hooks.log(logged);
    return reply;
  }

  close(): void {
    this.#closed = true;
    for (const socket of this.#udp) {
      try {
        socket.close();
      } catch {
        // already closed
      }
    }
    for (const listener of this.#tcp) {
      try {
        listener.close();
      } catch {
        // already closed
      }
    }
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    this.#udp = [];
    this.#tcp = [];
  }
}
