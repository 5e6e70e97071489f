// The transparent proxy (runner.md §8, policy.md §10.7): accepts redirected TCP connections,
// classifies the first bytes (TLS ClientHello / HTTP/1.x / DNS over TCP / other, or nothing
// within 250 ms), decides with the policy in force, and relays, intercepts or refuses.
// Everything the daemon wires (original destination, process, policy, CA, logs) is injected.

import type { DnsCache } from "../policy/mod.ts";
import { classifyHttpRequestStart } from "../proto/http1.ts";
import { classifyDnsOverTcp } from "../proto/dns_detect.ts";
import { type ClientHello, mayBeTls, parseClientHello } from "../proto/tls_client_hello.ts";
import {
  ConnectionContext,
  type ConnectionLogSink,
  DEFAULT_TIMEOUTS,
  type EnforcerSnapshot,
  type Judgement,
  type OperationalLogSink,
  type ProxyCounters,
  type ProxyTimeouts,
  type RequestHooks,
  type ResolvedConnection,
} from "./context.ts";
import { HttpSession } from "./http_session.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import { relayBothWays, type RelayResult } from "./relay.ts";
import { BufferedReader, type ByteStream, concatBytes, DenoConnStream, ReadTimeout } from "./streams.ts";
import {
  acceptClientTls,
  connectUpstreamTcp,
  connectUpstreamTls,
  UpstreamError,
  withTimeout,
} from "./tls.ts";

export type {
  EnforcerSnapshot,
  ProxyCounters,
  ProxyTimeouts,
  RequestHooks,
  ResolvedConnection,
} from "./context.ts";

/** Mints the leaf for a host name or an IP literal (src/proxy/certificates.ts fits). */
export type LeafSource = { leafFor(name: string): Promise<{ certPem: string; keyPem: string }> };

export type DnsOverTcpHandler = (
  conn: Deno.Conn,
  initial: Uint8Array,
  info: ResolvedConnection,
) => Promise<void>;

export type ProxyOptions = {
  hostname?: string;
  port?: number;
  /** an already bound listener (takes precedence over hostname/port) */
  listener?: Deno.Listener<Deno.TcpConn>;
  /** original destination and process of an accepted connection; undefined = unknown (denied) */
  resolveConnection(conn: Deno.TcpConn): Promise<ResolvedConnection | undefined>;
  /** called per decision, so a policy reload takes effect for the next connection or request */
  getEnforcer(): EnforcerSnapshot;
  /** the DNS cache the Enforcer uses: the `host` of `tcp` lines when no cached name matched */
  dnsCache?: DnsCache;
  audit?: boolean;
  certificates: LeafSource;
  /** extra CA PEMs trusted for upstream TLS besides the system roots (`--upstream-ca`) */
  upstreamCaCerts?: string[];
  connectionLog: ConnectionLogSink;
  operationalLog: OperationalLogSink;
  timeouts?: Partial<ProxyTimeouts>;
  /** DNS over TCP on a non-53 port; without it such a stream is judged as raw TCP */
  dnsOverTcp?: DnsOverTcpHandler;
  /** connections handled at once; beyond this new ones are closed at accept (memory bound) */
  maxConnections?: number;
  /** package check and token tagging of HTTP requests (extras.md); src/packages/request_hooks.ts */
  requestHooks?: RequestHooks;
};

export type ProxyHandle = {
  readonly addr: Deno.NetAddr;
  /** live counters (allowed, denied, errors) for `status` */
  readonly counters: Readonly<ProxyCounters>;
  readonly activeConnections: number;
  /** stops accepting, lets in-flight connections finish within closeGraceMs, aborts the rest */
  close(): Promise<void>;
};

type FirstBytes =
  | { kind: "tls"; hello: ClientHello; bytes: Uint8Array }
  | { kind: "http"; bytes: Uint8Array }
  | { kind: "dns"; bytes: Uint8Array }
  | { kind: "raw"; bytes: Uint8Array; why: string }
  /** could still be TLS or HTTP (malformed or incomplete): never relayed on a `tcp` verdict */
  | { kind: "refused"; bytes: Uint8Array; why: string }
  | { kind: "closed" };

const MAX_CLASSIFY_BYTES = 70 * 1024;

/** HAProxy PROXY protocol signatures (v1 text, v2 binary): a client never needs to send one. */
const PROXY_V1 = new TextEncoder().encode("PROXY ");
const PROXY_V2 = new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** The bytes begin with all of `prefix` (a shorter stream that could still become it is not). */
function startsWithPrefix(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Looks at the first bytes: waits `firstByteMs` for any (none ⇒ server speaks first), then
 * reads on while a verdict needs more, within `headMs` overall (bounded buffer).
 */
async function classifyFirstBytes(reader: BufferedReader, timeouts: ProxyTimeouts): Promise<FirstBytes> {
  let bytes: Uint8Array;
  try {
    const first = await reader.read(timeouts.firstByteMs);
    if (first === null) return { kind: "closed" };
    bytes = first;
  } catch (error) {
    if (error instanceof ReadTimeout) return { kind: "raw", bytes: new Uint8Array(0), why: "client silent" };
    throw error;
  }
  const deadline = Date.now() + timeouts.headMs;
  for (;;) {
    let waitMs = timeouts.firstByteMs;
    // Set while the bytes may still become a ClientHello or a request line. Such a stream is
    // refused when it stays incomplete: relayed on a `tcp` verdict (IP rules, DNS cache), a
    // client pausing mid-hello ("G", 300 ms, "ET / ...") would skip the SNI and Host decisions.
    let undecided: string | undefined;
    if (startsWithPrefix(bytes, PROXY_V1) || startsWithPrefix(bytes, PROXY_V2)) {
      // A load balancer that honours it would take the ClientHello or request behind it unseen.
      return { kind: "refused", bytes, why: "PROXY protocol header" };
    }
    if (mayBeTls(bytes)) {
      const hello = parseClientHello(bytes);
      if (hello.kind === "client_hello") return { kind: "tls", hello, bytes };
      if (hello.kind === "malformed") {
        return { kind: "refused", bytes, why: `malformed ClientHello: ${hello.reason}` };
      }
      if (hello.kind === "need_more") {
        waitMs = timeouts.headMs; // a TLS record header is unmistakable
        undecided = "incomplete ClientHello";
      }
    } else {
      const http = classifyHttpRequestStart(bytes);
      if (http === "http" || (http === "not_http" && looksLikeRequestLine(bytes))) {
        return { kind: "http", bytes };
      }
      const dns = classifyDnsOverTcp(bytes);
      if (dns === "dns") return { kind: "dns", bytes };
      if (
        http === "need_more" || mayBecome(bytes, H2_PREFACE_LINE) || mayBecome(bytes, PROXY_V1) ||
        mayBecome(bytes, PROXY_V2)
      ) {
        waitMs = timeouts.headMs;
        undecided = "incomplete HTTP request line or PROXY header";
      } else if (dns === "not_dns") {
        return { kind: "raw", bytes, why: "not TLS, HTTP or DNS" };
      }
    }
    const incomplete = (why: string): FirstBytes =>
      undecided ? { kind: "refused", bytes, why: undecided } : { kind: "raw", bytes, why };
    const left = Math.min(waitMs, deadline - Date.now());
    if (left <= 0 || bytes.length >= MAX_CLASSIFY_BYTES) return incomplete("first bytes incomplete");
    let more: Uint8Array | null;
    try {
      more = await reader.read(left);
    } catch (error) {
      if (error instanceof ReadTimeout) return incomplete("first bytes incomplete");
      throw error;
    }
    if (more === null) return incomplete("client ended after the first bytes");
    bytes = concatBytes(bytes, more);
  }
}

/**
 * A complete first line `TOKEN SP TARGET SP HTTP/d` with a method the fast check does not know
 * (`PRI * HTTP/2.0` of HTTP/2 prior knowledge, custom methods): it goes to the request parser,
 * which decides or refuses it, instead of being relayed on a `tcp` verdict.
 */
function looksLikeRequestLine(bytes: Uint8Array): boolean {
  const end = bytes.indexOf(0x0a);
  if (end < 0 || end > 8192) return false;
  let line = "";
  for (let i = 0; i < end; i++) line += String.fromCharCode(bytes[i]);
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ ]+ HTTP\/\d/.test(line);
}

const H2_PREFACE_LINE = new TextEncoder().encode("PRI * HTTP/2.0\r\n");

/** The bytes are a proper start of `prefix`: the stream may still become it. */
function mayBecome(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length >= prefix.length) return false;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

class Proxy {
  readonly #o: ProxyOptions;
  readonly #timeouts: ProxyTimeouts;
  readonly #listener: Deno.Listener<Deno.TcpConn>;
  readonly counters: ProxyCounters = { allowed: 0, denied: 0, errors: 0 };
  readonly #active = new Map<Promise<void>, Set<{ close(): void }>>();
  readonly #maxConnections: number;
  #closing = false;
  #acceptLoop: Promise<void> | undefined;
  #lastOverloadWarning = 0;

  constructor(options: ProxyOptions, listener: Deno.Listener<Deno.TcpConn>) {
    this.#o = options;
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...(options.timeouts ?? {}) };
    this.#listener = listener;
    this.#maxConnections = options.maxConnections ?? 4096;
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr as Deno.NetAddr;
  }

  get activeConnections(): number {
    return this.#active.size;
  }

  start(): void {
    this.#acceptLoop = this.#accept();
  }

  async #accept(): Promise<void> {
    const ops = this.#o.operationalLog;
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        ops.error(`Cannot accept a proxy connection: ${describe(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      if (this.#closing) {
        conn.close();
        return;
      }
      if (this.#active.size >= this.#maxConnections) {
        try {
          conn.close();
        } catch {
          // gone
        }
        const now = Date.now();
        if (now - this.#lastOverloadWarning > 10_000) {
          this.#lastOverloadWarning = now;
          ops.warn(`proxy: ${this.#maxConnections} connections open, refusing new ones`);
        }
        continue;
      }
      const closers = new Set<{ close(): void }>();
      const running = this.#handle(conn, closers).catch((error) => {
        this.counters.errors++;
        ops.error(`Cannot handle proxy connection: ${describe(error)}`);
      }).finally(() => {
        for (const closer of closers) closer.close();
        try {
          conn.close();
        } catch {
          // already closed
        }
        this.#active.delete(running);
      });
      this.#active.set(running, closers);
    }
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    await this.#acceptLoop;
    const inFlight = [...this.#active.keys()];
    if (inFlight.length === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#timeouts.closeGraceMs)));
    await Promise.race([Promise.allSettled(inFlight), grace]);
    clearTimeout(timer);
    for (const closers of this.#active.values()) for (const closer of closers) closer.close();
    await Promise.allSettled([...this.#active.keys()]);
  }

  #context(info: ResolvedConnection): ConnectionContext {
    return new ConnectionContext({
      info,
      audit: this.#o.audit === true,
      timeouts: this.#timeouts,
      hooks: this.#o.requestHooks,
      getEnforcer: () => this.#o.getEnforcer(),
      log: this.#o.connectionLog,
      ops: this.#o.operationalLog,
      counters: this.counters,
    });
  }

  async #handle(conn: Deno.TcpConn, closers: Set<{ close(): void }>): Promise<void> {
    closers.add({
      close: () => {
        try {
          conn.close();
        } catch {
          // already closed
        }
      },
    });
    try {
      conn.setNoDelay(true);
    } catch {
      // already reset by the client
    }
    const peerPort = (conn.remoteAddr as Deno.NetAddr).port;
    let info: ResolvedConnection | undefined;
    let failure: string | undefined;
    try {
      info = await withTimeout(
        this.#o.resolveConnection(conn),
        this.#timeouts.headMs,
        "original destination lookup timed out",
      );
    } catch (error) {
      failure = `internal error: ${describe(error)}`;
      this.counters.errors++;
      this.#o.operationalLog.error(
        `Cannot find the original destination of a connection: ${describe(error)}`,
      );
    }
    if (info) info = normalizedDestination(info);
    // A "destination" that is this listener would make the proxy connect to itself in a loop.
    if (info && info.dst_port === this.addr.port && isLocalAddress(info.dst_ip, this.addr.hostname)) {
      this.#o.operationalLog.warn(`proxy: refused a connection whose destination is the proxy itself`);
      info = undefined;
    }
    if (!info) {
      const ctx = this.#context({ dst_ip: "unknown", dst_port: 0, src_port: peerPort });
      ctx.logLine({ type: "tcp" }, {
        decision: {
          allowed: false,
          policy: "deny",
          passthrough: false,
          insecure: false,
          reason: failure ?? "original destination unknown",
        },
      });
      return;
    }
    const ctx = this.#context(info);
    const clientStream = new DenoConnStream(conn);
    const client = new BufferedReader(clientStream);
    let first: FirstBytes;
    try {
      first = await classifyFirstBytes(client, this.#timeouts);
    } catch (error) {
      // The client reset the connection before saying anything useful: nothing to judge.
      ctx.ops.debug(`proxy ${info.dst_ip}:${info.dst_port}: client failed early: ${describe(error)}`);
      return;
    }
    await this.#dispatch(ctx, conn, client, first, closers);
  }

  /** Hands classified first bytes to their handler (again for a silent client that spoke late). */
  async #dispatch(
    ctx: ConnectionContext,
    conn: Deno.TcpConn,
    client: BufferedReader,
    first: FirstBytes,
    closers: Set<{ close(): void }>,
  ): Promise<void> {
    const info = ctx.info;
    switch (first.kind) {
      case "closed":
        return;
      case "tls":
        return await this.#tls(ctx, conn, first.hello, first.bytes, closers);
      case "http":
        client.unread(first.bytes);
        return await this.#plainHttp(ctx, client, closers);
      case "dns":
        if (this.#o.dnsOverTcp) {
          closers.clear(); // the handler owns the connection now
          return await this.#o.dnsOverTcp(conn, first.bytes, info);
        }
        client.unread(first.bytes);
        return await this.#rawTcp(ctx, client, () => this.#tcpUpstream(info), closers);
      case "refused":
        if (!ctx.audit) return this.#refuse(ctx, first.why);
        // Audit mode never blocks: judged and relayed as raw TCP, with the reason on record.
        ctx.ops.warn(`proxy ${info.dst_ip}:${info.dst_port}: ${first.why}; relayed as raw TCP (audit)`);
        client.unread(first.bytes);
        return await this.#rawTcp(ctx, client, () => this.#tcpUpstream(info), closers);
      case "raw": {
        client.unread(first.bytes);
        // Server speaks first: but if the client speaks before the server, classify it after all.
        const late = first.why === "client silent"
          ? (again: FirstBytes) => this.#dispatch(ctx, conn, client, again, closers)
          : undefined;
        return await this.#rawTcp(ctx, client, () => this.#tcpUpstream(info), closers, late);
      }
    }
  }

  /**
   * Malformed or incomplete TLS/HTTP first bytes (enforce mode): the connection fails with a
   * logged reason.
   * A `tcp` line is written only when the `tcp` verdict denies anyway (no relay happened).
   */
  #refuse(ctx: ConnectionContext, why: string): void {
    const { dst_ip, dst_port } = ctx.info;
    ctx.ops.warn(`proxy ${dst_ip}:${dst_port}: refused the connection: ${why}`);
    const judgement = ctx.judge({ type: "tcp" });
    if (!judgement.decision.allowed) ctx.logLine(this.#tcpLine(ctx, judgement), judgement);
  }

  #tcpLine(ctx: ConnectionContext, judgement: Judgement): ConnectionLogEvent {
    const host = judgement.decision.hostname ?? this.#o.dnsCache?.lookup(ctx.info.dst_ip);
    return host ? { type: "tcp", host } : { type: "tcp" };
  }

  async #tcpUpstream(info: ResolvedConnection): Promise<ByteStream> {
    return new DenoConnStream(await connectUpstreamTcp(info.dst_ip, info.dst_port, this.#timeouts.connectMs));
  }

  #tlsUpstream(info: ResolvedConnection, servername: string, insecure: boolean): Promise<ByteStream> {
    return connectUpstreamTls(info.dst_ip, info.dst_port, servername, {
      caCerts: this.#o.upstreamCaCerts,
      insecure,
      connectTimeoutMs: this.#timeouts.connectMs,
      handshakeTimeoutMs: this.#timeouts.handshakeMs,
    });
  }

  /**
   * Raw TCP: one `tcp` decision and line per connection, then a relay with half-close. With
   * `late` (the client was silent), whoever speaks first decides: the server ⇒ relayed; the
   * client ⇒ its bytes are classified and handed to `late` unless they are raw TCP, so a client
   * that waits 250 ms cannot carry a ClientHello or a request past the SNI/Host decisions on a
   * `tcp` verdict (the unused upstream connection is closed).
   */
  async #rawTcp(
    ctx: ConnectionContext,
    client: BufferedReader,
    connect: () => Promise<ByteStream>,
    closers: Set<{ close(): void }>,
    late?: (first: FirstBytes) => Promise<void>,
  ): Promise<void> {
    const judgement = ctx.judge({ type: "tcp" });
    const line = this.#tcpLine(ctx, judgement);
    if (!judgement.decision.allowed) {
      ctx.logLine(line, judgement);
      return;
    }
    let upstream: ByteStream;
    try {
      upstream = await connect();
    } catch (error) {
      ctx.logLine({ ...line, error: errorKind(error) }, judgement);
      ctx.ops.warn(`proxy: ${describe(error)}`);
      return;
    }
    closers.add(upstream);
    const server = new BufferedReader(upstream);
    if (late) {
      const spoken = await Promise.race([
        client.ready().then(() => "client" as const),
        server.ready().then(() => "server" as const),
      ]);
      if (spoken === "client") {
        let first: FirstBytes;
        try {
          first = await classifyFirstBytes(client, this.#timeouts);
        } catch (error) {
          ctx.ops.debug(`proxy ${ctx.info.dst_ip}:${ctx.info.dst_port}: client failed: ${describe(error)}`);
          return;
        }
        if (first.kind !== "raw" && first.kind !== "closed") {
          closers.delete(upstream);
          upstream.close();
          return await late(first);
        }
        if (first.kind === "raw") client.unread(first.bytes);
      }
    }
    ctx.logLine(line, judgement);
    relayEnded(ctx, await relayBothWays(client, server));
  }

  async #plainHttp(ctx: ConnectionContext, client: BufferedReader, closers: Set<{ close(): void }>) {
    const session = new HttpSession({
      scheme: "http",
      client,
      ctx,
      connectUpstream: async () => {
        const upstream = await this.#tcpUpstream(ctx.info);
        closers.add(upstream);
        return upstream;
      },
    });
    await session.run();
  }

  async #tls(
    ctx: ConnectionContext,
    conn: Deno.TcpConn,
    hello: ClientHello,
    bytes: Uint8Array,
    closers: Set<{ close(): void }>,
  ): Promise<void> {
    const sni = hello.sni;
    const info = ctx.info;
    const judgement = ctx.judge(sni ? { type: "https", host: sni } : { type: "https" }, { mitm: true });
    const stage = sni ? { type: "https" as const, host: sni } : { type: "https" as const };
    if (!judgement.decision.allowed) {
      ctx.logLine(stage, judgement);
      return;
    }
    if (judgement.decision.passthrough) {
      const client = new BufferedReader(new DenoConnStream(conn));
      client.unread(bytes);
      let upstream: ByteStream;
      try {
        upstream = await this.#tcpUpstream(info);
      } catch (error) {
        ctx.logLine({ ...stage, passthrough: true, error: errorKind(error) }, judgement);
        ctx.ops.warn(`proxy: ${describe(error)}`);
        return;
      }
      closers.add(upstream);
      ctx.logLine({ ...stage, passthrough: true }, judgement);
      relayEnded(ctx, await relayBothWays(client, new BufferedReader(upstream)));
      return;
    }

    let leaf: { certPem: string; keyPem: string };
    try {
      leaf = await this.#o.certificates.leafFor(sni ?? info.dst_ip);
    } catch (error) {
      this.counters.errors++;
      ctx.ops.error(`Cannot mint a certificate for ${sni ?? info.dst_ip}: ${describe(error)}`);
      ctx.logLine({ ...stage }, {
        decision: {
          ...judgement.decision,
          allowed: false,
          policy: "deny",
          reason: `internal error: ${describe(error)}`,
        },
      });
      return;
    }
    const handshake = await acceptClientTls(conn, bytes, leaf, this.#timeouts.handshakeMs);
    if (!handshake.ok) {
      ctx.ops.debug(
        `proxy ${info.dst_ip}:${info.dst_port}: client TLS handshake failed: ${handshake.reason}`,
      );
      const plain = ctx.judge(sni ? { type: "https", host: sni } : { type: "https" }, { mitm: false });
      ctx.logLine({ type: "https", host: sni ?? null, error: "tls_client_rejected_ca" }, plain);
      return;
    }
    closers.add(handshake.stream);
    const insecure = judgement.decision.insecure;
    const client = new BufferedReader(handshake.stream);
    let inner: FirstBytes;
    try {
      inner = await classifyFirstBytes(client, this.#timeouts);
    } catch (error) {
      ctx.ops.debug(
        `proxy ${info.dst_ip}:${info.dst_port}: client failed after the handshake: ${describe(error)}`,
      );
      return;
    }
    await this.#inside(ctx, client, sni, insecure, inner, closers);
  }

  /** What an intercepted client sent after the handshake: HTTP/1.x requests, or raw TCP. */
  async #inside(
    ctx: ConnectionContext,
    client: BufferedReader,
    sni: string | undefined,
    insecure: boolean,
    inner: FirstBytes,
    closers: Set<{ close(): void }>,
  ): Promise<void> {
    const info = ctx.info;
    if (inner.kind === "closed") return;
    if (inner.kind === "refused") {
      if (!ctx.audit) return this.#refuse(ctx, inner.why);
      ctx.ops.warn(`proxy ${info.dst_ip}:${info.dst_port}: ${inner.why}; relayed as raw TCP (audit)`);
    }
    client.unread(inner.bytes);
    if (inner.kind === "http") {
      const session = new HttpSession({
        scheme: "https",
        client,
        ctx,
        sni,
        insecure,
        connectUpstream: async (host) => {
          const upstream = await this.#tlsUpstream(info, sni ?? host, insecure);
          closers.add(upstream);
          return upstream;
        },
      });
      await session.run();
      return;
    }
    // TLS carrying something other than HTTP/1.x: judged as raw TCP after the handshake. A
    // silent client that sends a request later still gets every request decided.
    const late = inner.kind === "raw" && inner.why === "client silent"
      ? (again: FirstBytes) => this.#inside(ctx, client, sni, insecure, again, closers)
      : undefined;
    const connect = () => this.#tlsUpstream(info, sni ?? info.dst_ip, insecure);
    await this.#rawTcp(ctx, client, connect, closers, late);
  }
}

/** `::ffff:a.b.c.d` (IPv4-mapped) is handled as `a.b.c.d` (policy.md §10.1). */
function normalizedDestination(info: ResolvedConnection): ResolvedConnection {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(info.dst_ip);
  return mapped ? { ...info, dst_ip: mapped[1] } : info;
}

function isLocalAddress(ip: string, listening: string): boolean {
  return ip === listening || ip === "0.0.0.0" || ip.startsWith("127.");
}

function relayEnded(ctx: ConnectionContext, result: RelayResult): void {
  const { dst_ip, dst_port } = ctx.info;
  const how = result.error ? `failed: ${result.error}` : "ended";
  ctx.ops.debug(
    `proxy ${dst_ip}:${dst_port}: relay ${how} (${result.toUpstream} bytes up, ${result.toClient} down)`,
  );
}

function errorKind(error: unknown): "upstream_unreachable" | "upstream_tls_failed" {
  return error instanceof UpstreamError ? error.kind : "upstream_unreachable";
}

/** Starts the proxy; resolves once it listens. */
export function startProxy(options: ProxyOptions): Promise<ProxyHandle> {
  if (typeof options?.resolveConnection !== "function" || typeof options.getEnforcer !== "function") {
    return Promise.reject(
      new TypeError("Cannot start proxy: resolveConnection and getEnforcer are required"),
    );
  }
  let listener: Deno.Listener<Deno.TcpConn>;
  try {
    listener = options.listener ??
      Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0, transport: "tcp" });
  } catch (error) {
    const where = `${options.hostname ?? "127.0.0.1"}:${options.port ?? 0}`;
    return Promise.reject(new Error(`Cannot listen on ${where}: ${describe(error)}`));
  }
  const proxy = new Proxy(options, listener);
  proxy.start();
  const handle: ProxyHandle = {
    get addr() {
      return proxy.addr;
    },
    get counters() {
      return proxy.counters;
    },
    get activeConnections() {
      return proxy.activeConnections;
    },
    close: () => proxy.close(),
  };
  return Promise.resolve(handle);
}

export type { Judgement, OperationalLogSink };
export type { ConnectionLogSink };
