// Test harness for the proxy: loopback upstreams (HTTPS with a test CA, plain HTTP, raw TCP),
// a proxy on 127.0.0.1 whose fake resolveConnection maps every accepted connection to one
// upstream, a collecting connection log, and small clients (curl, raw Deno TLS).

import { EgressCertificates } from "../../src/proxy/certificates.ts";
import { DnsCache, Enforcer, parsePolicy } from "../../src/policy/mod.ts";
import { type ConnectionLogEvent, formatConnectionLine } from "../../src/log/connection_log.ts";
import {
  type ProxyHandle,
  type ProxyOptions,
  type ProxyTimeouts,
  startProxy,
} from "../../src/proxy/server.ts";
import { type Schema, validate } from "../helpers/json_schema.ts";

export const schema: Schema = JSON.parse(
  await Deno.readTextFile(new URL("../../src/log/schema.json", import.meta.url)),
);

const CA_CACHE = new Map<string, Promise<EgressCertificates>>();

/** A CA living in a temp dir for the whole test process (key generation is the slow part). */
export function testCa(label: string): Promise<EgressCertificates> {
  let ca = CA_CACHE.get(label);
  if (!ca) {
    ca = Deno.makeTempDir({ prefix: `egress-proxy-${label}-` }).then((dir) =>
      EgressCertificates.loadOrCreate(dir)
    );
    CA_CACHE.set(label, ca);
  }
  return ca;
}

export type Upstream = { ip: string; port: number; close(): Promise<void> };

export type Handler = (request: Request) => Response | Promise<Response>;

/** Deno.serve on `ip` (HTTPS when a cert is given). */
export function httpUpstream(
  ip: string,
  handler: Handler,
  tls?: { cert: string; key: string },
): Promise<Upstream> {
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: ip,
      port: 0,
      ...(tls ?? {}),
      onListen: (addr) => {
        resolve({ ip, port: (addr as Deno.NetAddr).port, close: () => server.shutdown() });
      },
    }, handler);
  });
}

/** A raw TCP server: `onConn` gets each accepted connection. */
export function rawUpstream(ip: string, onConn: (conn: Deno.Conn) => Promise<void>): Upstream {
  const listener = Deno.listen({ hostname: ip, port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = onConn(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch {
          // closed by the handler
        }
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    ip,
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed
        }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    },
  };
}

/** Echoes every byte back; half-closes after the client half-closes. */
export function echoUpstream(ip: string): Upstream {
  return rawUpstream(ip, async (conn) => {
    const buffer = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      await writeAll(conn, buffer.subarray(0, n));
    }
    await conn.closeWrite();
  });
}

export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

export type CollectedLog = {
  lines: Record<string, unknown>[];
  raw: string[];
  write(e: ConnectionLogEvent): void;
};

export function collectingLog(): CollectedLog {
  const log: CollectedLog = {
    lines: [],
    raw: [],
    write(event) {
      const line = formatConnectionLine(event);
      log.raw.push(line);
      log.lines.push(JSON.parse(line));
    },
  };
  return log;
}

export type OpsLog = {
  lines: string[];
  debug(m: string): void;
  info(m: string): void;
  warn(m: string): void;
  error(m: string): void;
};

export function collectingOps(): OpsLog {
  const ops: OpsLog = {
    lines: [],
    debug: (m) => ops.lines.push(`DEBUG ${m}`),
    info: (m) => ops.lines.push(`INFO ${m}`),
    warn: (m) => ops.lines.push(`WARN ${m}`),
    error: (m) => ops.lines.push(`ERROR ${m}`),
  };
  return ops;
}

export type ProxyUnderTest = {
  proxy: ProxyHandle;
  port: number;
  log: CollectedLog;
  ops: OpsLog;
  dnsCache: DnsCache;
  egressCa: EgressCertificates;
  /** where the next accepted connections "were going" (mutable between clients) */
  target: { ip: string; port: number } | undefined;
  setPolicy(text: string): void;
  close(): Promise<void>;
};

export type ProxyTestOptions = {
  policy: string;
  target?: { ip: string; port: number };
  audit?: boolean;
  upstreamCaCerts?: string[];
  timeouts?: Partial<ProxyTimeouts>;
  process?: {
    pid: number;
    exe?: string;
    cmdline?: string[];
    cgroup?: string;
    step?: string;
    action?: string;
  };
  extra?: Partial<ProxyOptions>;
};

/** Starts a proxy whose fake resolveConnection maps each connection to `target`. */
export async function proxyUnderTest(options: ProxyTestOptions): Promise<ProxyUnderTest> {
  const egressCa = await testCa("egress");
  const dnsCache = new DnsCache();
  const log = collectingLog();
  const ops = collectingOps();
  let snapshot = {
    policy: parsePolicy(options.policy),
    enforcer: undefined as unknown as Enforcer,
  };
  const build = (text: string) => {
    const policy = parsePolicy(text);
    return { policy, enforcer: new Enforcer(policy, { audit: options.audit, dnsCache, corroborate: true }) };
  };
  snapshot = build(options.policy);
  const state: ProxyUnderTest = {
    proxy: undefined as unknown as ProxyHandle,
    port: 0,
    log,
    ops,
    dnsCache,
    egressCa,
    target: options.target,
    setPolicy: (text) => (snapshot = build(text)),
    close: async () => await state.proxy.close(),
  };
  state.proxy = await startProxy({
    hostname: "127.0.0.1",
    port: 0,
    resolveConnection: (conn) => {
      const target = state.target;
      if (!target) return Promise.resolve(undefined);
      const src_port = (conn.remoteAddr as Deno.NetAddr).port;
      return Promise.resolve({
        dst_ip: target.ip,
        dst_port: target.port,
        src_port,
        ...(options.process ? { process: options.process } : {}),
      });
    },
    getEnforcer: () => snapshot,
    dnsCache,
    audit: options.audit,
    certificates: egressCa,
    upstreamCaCerts: options.upstreamCaCerts,
    connectionLog: log,
    operationalLog: ops,
    timeouts: options.timeouts,
    ...(options.extra ?? {}),
  });
  state.port = state.proxy.addr.port;
  return state;
}

export type CurlResult = { code: number; status: number; body: string; stderr: string };

/** Runs curl with `args`; `-w` appends the status on the last line. */
export async function curl(args: string[], stdin?: Uint8Array): Promise<CurlResult> {
  const command = new Deno.Command("curl", {
    args: ["-sS", "--max-time", "30", "-w", "\n%{http_code}", ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
  const child = command.spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
  }
  const output = await child.output();
  const text = new TextDecoder().decode(output.stdout);
  const at = text.lastIndexOf("\n");
  return {
    code: output.code,
    status: Number(text.slice(at + 1)) || 0,
    body: text.slice(0, at),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

/** curl args that send `host:port` to the proxy while the client believes it talks to the host. */
export function via(proxy: ProxyUnderTest, host: string, port: number): string[] {
  return ["--connect-to", `${host}:${port}:127.0.0.1:${proxy.port}`];
}

/** Schema errors of every collected line (empty when all are valid). */
export function schemaErrors(log: CollectedLog): string[] {
  const errors: string[] = [];
  for (const line of log.lines) {
    for (const e of validate(schema, line)) errors.push(`${JSON.stringify(line)}: ${e}`);
  }
  return errors;
}

/** Waits until `predicate` holds (lines are written after responses sometimes). */
export async function eventually(predicate: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Opens a TLS client connection through the proxy with `serverName` as SNI (a host, or an IP ⇒ no SNI). */
export async function tlsClient(
  proxy: ProxyUnderTest,
  serverName: string,
  caCerts?: string[],
): Promise<Deno.TlsConn> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  return await Deno.startTls(tcp, { hostname: serverName, caCerts, alpnProtocols: ["http/1.1"] });
}

/** Reads until the stream ends or `bytes` bytes arrived. */
export async function readAll(conn: Deno.Conn, limit = 1 << 20, timeoutMs = 5000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(65536);
  const until = Date.now() + timeoutMs;
  while (total < limit) {
    const left = until - Date.now();
    if (left <= 0) break;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buffer).catch(() => null),
      new Promise<"t">((r) => (timer = setTimeout(() => r("t"), left))),
    ]);
    clearTimeout(timer);
    if (n === "t" || n === null) break;
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Reads one HTTP response (head + Content-Length body) from a raw connection. */
export async function readResponse(
  conn: Deno.Conn,
  timeoutMs = 5000,
  noBody = false,
): Promise<{ status: number; head: string; body: string }> {
  const decoder = new TextDecoder();
  let text = "";
  const buffer = new Uint8Array(65536);
  const until = Date.now() + timeoutMs;
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const head = text.slice(0, end);
      const length = noBody ? 0 : Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? "0");
      if (text.length - end - 4 >= length) {
        return { status: Number(head.split(" ")[1]), head, body: text.slice(end + 4, end + 4 + length) };
      }
    }
    if (Date.now() > until) throw new Error(`response not complete: ${JSON.stringify(text)}`);
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`connection closed inside the response: ${JSON.stringify(text)}`);
    text += decoder.decode(buffer.subarray(0, n));
  }
}

export const encode = (s: string) => new TextEncoder().encode(s);
export const decode = (b: Uint8Array) => new TextDecoder().decode(b);
