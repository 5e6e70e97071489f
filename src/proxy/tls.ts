// TLS on both sides of an intercepted connection (ARCHITECTURE.md "Deno specifics"):
// - client side: node:tls TLSSocket (server mode) over a Duplex that replays the peeked
//   ClientHello, with the leaf minted for the SNI (or the original IP); ALPN http/1.1 only;
// - upstream: Deno.startTls verifying against the name with system roots + extra CAs, or node:tls
//   with rejectUnauthorized false for an `insecure` connection only (Deno's flag is process-wide).

import * as tls from "node:tls";
import { type ByteStream, DenoConnStream, duplexOverConn, NodeSocketStream } from "./streams.ts";

export const ALPN_HTTP1 = ["http/1.1"];

export type UpstreamFailure = "upstream_unreachable" | "upstream_tls_failed";

/** An upstream connection that could not be made; `kind` is the log line's `error`. */
export class UpstreamError extends Error {
  readonly kind: UpstreamFailure;
  constructor(kind: UpstreamFailure, message: string) {
    super(message);
    this.kind = kind;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Rejects after `ms` with `message`; the timer never keeps the process alive past the race. */
export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export type ServerHandshake =
  | { ok: true; stream: NodeSocketStream; alpn: string | false }
  | { ok: false; reason: string };

/**
 * Terminates the client's TLS with `leaf`. Resolves `ok: false` when the handshake fails (the
 * client rejected the CA, closed, or timed out); the connection is then closed.
 */
export function acceptClientTls(
  conn: Deno.Conn,
  clientHello: Uint8Array,
  leaf: { certPem: string; keyPem: string },
  timeoutMs: number,
): Promise<ServerHandshake> {
  const transport = duplexOverConn(conn, clientHello);
  const secureContext = tls.createSecureContext({ cert: leaf.certPem, key: leaf.keyPem });
  const socket = new tls.TLSSocket(transport, {
    isServer: true,
    secureContext,
    ALPNProtocols: ALPN_HTTP1,
    requestCert: false,
  } as tls.TLSSocketOptions);
  return new Promise<ServerHandshake>((resolve) => {
    let settled = false;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      transport.destroy();
      resolve({ ok: false, reason });
    };
    const timer = setTimeout(() => fail("TLS handshake timed out"), timeoutMs);
    socket.once("secure", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener("error", onError);
      socket.removeListener("close", onClose);
      resolve({ ok: true, stream: new NodeSocketStream(socket), alpn: socket.alpnProtocol ?? false });
    });
    const onError = (error: Error) => fail(describe(error));
    const onClose = () => fail("client closed during the TLS handshake");
    socket.on("error", onError);
    socket.on("close", onClose);
    transport.on("error", onError);
  });
}

export type UpstreamTlsOptions = {
  /** extra trusted CA PEMs (`--upstream-ca`), added to the system roots */
  caCerts?: string[];
  /** skip certificate verification for this connection only */
  insecure?: boolean;
  connectTimeoutMs: number;
  handshakeTimeoutMs: number;
};

/** Opens a plain TCP connection to the original destination, with noDelay. */
export async function connectUpstreamTcp(ip: string, port: number, timeoutMs: number): Promise<Deno.TcpConn> {
  const connecting = Deno.connect({ hostname: ip, port, transport: "tcp" });
  try {
    const conn = await withTimeout(connecting, timeoutMs, `connect to ${ip}:${port} timed out`);
    try {
      conn.setNoDelay(true);
    } catch {
      // closed already: the first read or write reports it
    }
    return conn;
  } catch (error) {
    // A connect that completes after its timeout must not leak.
    connecting.then((late) => late.close(), () => {});
    throw new UpstreamError("upstream_unreachable", `Cannot connect to ${ip}:${port}: ${describe(error)}`);
  }
}

/**
 * TLS to the original destination, verifying the certificate against `servername` (a host name,
 * or the IP itself when the client sent no SNI and no Host), unless `insecure`.
 */
export async function connectUpstreamTls(
  ip: string,
  port: number,
  servername: string,
  options: UpstreamTlsOptions,
): Promise<ByteStream> {
  if (options.insecure) return await connectInsecure(ip, port, servername, options);
  const tcp = await connectUpstreamTcp(ip, port, options.connectTimeoutMs);
  let conn: Deno.TlsConn;
  try {
    const startOptions: Deno.StartTlsOptions = { hostname: servername, alpnProtocols: ALPN_HTTP1 };
    if (options.caCerts && options.caCerts.length > 0) startOptions.caCerts = options.caCerts;
    conn = await Deno.startTls(tcp, startOptions);
  } catch (error) {
    try {
      tcp.close();
    } catch {
      // closed
    }
    throw new UpstreamError("upstream_tls_failed", `Cannot start TLS with ${servername}: ${describe(error)}`);
  }
  try {
    await withTimeout(conn.handshake(), options.handshakeTimeoutMs, "TLS handshake timed out");
  } catch (error) {
    try {
      conn.close();
    } catch {
      // closed
    }
    const message = describe(error);
    // A reset or timeout is the network; anything the TLS layer says is a verification failure.
    const kind = /reset|refused|timed out|broken pipe|unexpected ?eof|connection closed/i.test(message)
      ? "upstream_unreachable"
      : "upstream_tls_failed";
    throw new UpstreamError(kind, `Cannot verify TLS of ${servername} at ${ip}:${port}: ${message}`);
  }
  return new DenoConnStream(conn);
}

function connectInsecure(
  ip: string,
  port: number,
  servername: string,
  options: UpstreamTlsOptions,
): Promise<ByteStream> {
  return new Promise((resolve, reject) => {
    const isIp = /^[0-9.]+$/.test(servername) || servername.includes(":");
    const socket = tls.connect({
      host: ip,
      port,
      servername: isIp ? undefined : servername,
      rejectUnauthorized: false,
      ALPNProtocols: ALPN_HTTP1,
    });
    let settled = false;
    let connected = false;
    const timer = setTimeout(() => {
      fail(new Error(connected ? "TLS handshake timed out" : `connect to ${ip}:${port} timed out`));
    }, options.connectTimeoutMs + options.handshakeTimeoutMs);
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const kind = connected ? "upstream_tls_failed" : "upstream_unreachable";
      reject(new UpstreamError(kind, `Cannot connect to ${ip}:${port}: ${error.message}`));
    };
    socket.once("connect", () => {
      connected = true;
      try {
        socket.setNoDelay(true);
      } catch {
        // not supported on this socket
      }
    });
    socket.once("secureConnect", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener("error", fail);
      resolve(new NodeSocketStream(socket));
    });
    socket.on("error", fail);
  });
}
