// HTTP/1.x request loop for one client connection, plain or inside intercepted TLS: every
// request is decided and logged; allowed ones go to the ORIGINAL destination (never a
// re-resolved Host) over one upstream connection reused while the authority stays the same.
// Bodies stream through (no whole-body buffering); requests are handled one at a time, so
// pipelined requests wait in the client's reader until their turn.

import {
  ChunkedDecoder,
  parseResponseHead,
  type RequestHead,
  RequestHeadParser,
  type ResponseHead,
} from "../proto/http1.ts";
import { buildLogUrl } from "../proto/url_scrub.ts";
import { type PackageVerdict, packageVerdictEffect } from "../packages/reputation.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import type { ConnectionContext, Judgement } from "./context.ts";
import { relayBothWays } from "./relay.ts";
import { BufferedReader, type ByteStream, concatBytes, ReadTimeout } from "./streams.ts";
import { UpstreamError } from "./tls.ts";

/** A denied request's body is read and discarded up to this much; beyond it the connection closes. */
export const DENIED_BODY_LIMIT = 1024 * 1024;
const BLOCKED_TEXT = "Blocked by egress policy";

export type HttpSessionOptions = {
  scheme: "http" | "https";
  client: BufferedReader;
  ctx: ConnectionContext;
  /** SNI of the intercepted connection */
  sni?: string;
  /** the connection is `insecure`: requests judged as `http` events, logged `insecure: true` */
  insecure?: boolean;
  /** opens a connection to the original destination for requests to `host` (no port) */
  connectUpstream(host: string): Promise<ByteStream>;
};

/** Waits for the next chunk; `what` names the wait in the timeout error. */
async function timedRead(reader: BufferedReader, ms: number, what: string): Promise<Uint8Array | null> {
  try {
    return await reader.read(ms);
  } catch (error) {
    if (error instanceof ReadTimeout) throw new TimeoutError(`${what}: ${error.message}`);
    throw error;
  }
}

class TimeoutError extends Error {}

const encoder = new TextEncoder();

function simpleResponse(
  status: number,
  reason: string,
  text: string,
  options: { close: boolean; head?: boolean },
): Uint8Array {
  const body = encoder.encode(text);
  const head =
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
    (options.close ? "Connection: close\r\n" : "") + "\r\n";
  return options.head ? encoder.encode(head) : concatBytes(encoder.encode(head), body);
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  505: "HTTP Version Not Supported",
};

type Upstream = { key: string; reader: BufferedReader };

/**
 * Upgrades the proxy relays: WebSocket (frames are not inspected, runner.md §7). Any other
 * Upgrade (h2c above all) would carry further requests past the per-request decision, so it
 * is removed from the forwarded head and the server answers in HTTP/1.1.
 */
function allowedUpgrade(head: RequestHead): boolean {
  return head.upgrade !== undefined && head.upgrade.trim().toLowerCase() === "websocket";
}

function tunnelRequested(head: RequestHead): boolean {
  return head.method === "CONNECT" || allowedUpgrade(head);
}

const HOP_UPGRADE_HEADERS = new Set(["upgrade", "http2-settings"]);

/** The head as sent upstream: the client's bytes, or a rebuilt head without a refused upgrade. */
function forwardedHead(head: RequestHead, raw: Uint8Array): Uint8Array {
  const asksUpgrade = head.upgrade !== undefined ||
    head.headers.some((h) => HOP_UPGRADE_HEADERS.has(h.key)) || head.connection.includes("upgrade");
  if (!asksUpgrade || allowedUpgrade(head)) return raw;
  let text = `${head.method} ${head.rawTarget} HTTP/1.${head.minorVersion}\r\n`;
  for (const header of head.headers) {
    if (HOP_UPGRADE_HEADERS.has(header.key)) continue;
    if (header.key === "connection") {
      const kept = header.value.split(",").map((t) => t.trim()).filter((t) => {
        const token = t.toLowerCase();
        return token !== "" && token !== "upgrade" && token !== "http2-settings";
      });
      if (kept.length === 0) continue;
      text += `${header.name}: ${kept.join(", ")}\r\n`;
      continue;
    }
    text += `${header.name}: ${header.value}\r\n`;
  }
  text += "\r\n";
  // Header bytes are latin1 (the parser read them so): encode them back the same way.
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Outcome of one request/response exchange. */
type Exchange = "keep-alive" | "close" | "tunnel";

function hostOf(authority: string): string {
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    return authority.slice(0, close + 1).toLowerCase();
  }
  const colon = authority.lastIndexOf(":");
  return (colon >= 0 ? authority.slice(0, colon) : authority).toLowerCase();
}

export class HttpSession {
  readonly #o: HttpSessionOptions;
  readonly #client: BufferedReader;
  readonly #ctx: ConnectionContext;
  #upstream: Upstream | undefined;
  #first = true;

  constructor(options: HttpSessionOptions) {
    this.#o = options;
    this.#client = options.client;
    this.#ctx = options.ctx;
  }

  /** Runs until the client or a fatal condition ends the connection; closes everything. */
  async run(): Promise<void> {
    try {
      for (;;) {
        const outcome = await this.#one();
        if (outcome !== "keep-alive") break;
      }
    } catch (error) {
      if (!(error instanceof TimeoutError)) {
        this.#ctx.ops.debug(
          `proxy ${this.#ctx.info.dst_ip}:${this.#ctx.info.dst_port}: connection ended: ${
            error instanceof Error ? error.message : error
          }`,
        );
      }
    } finally {
      this.#closeUpstream();
      this.#client.stream.close();
    }
  }

  #closeUpstream(): void {
    this.#upstream?.reader.stream.close();
    this.#upstream = undefined;
  }

  /** Reads one request head. Returns null at a clean end (EOF or idle timeout between requests). */
  async #readHead(): Promise<
    { head: RequestHead; raw: Uint8Array } | { malformed: number; reason: string } | null
  > {
    const parser = new RequestHeadParser();
    let buffer: Uint8Array = new Uint8Array(0);
    const timeouts = this.#ctx.timeouts;
    let deadline = 0;
    for (;;) {
      let chunk: Uint8Array | null;
      if (buffer.length === 0) {
        // Waiting for a request to start: idle keep-alive bound (the first one is already here).
        try {
          chunk = await timedRead(this.#client, this.#first ? timeouts.headMs : timeouts.idleMs, "idle");
        } catch (error) {
          if (error instanceof TimeoutError) return null;
          throw error;
        }
        if (chunk === null) return null;
        deadline = Date.now() + timeouts.headMs;
      } else {
        const left = deadline - Date.now();
        if (left <= 0) return { malformed: 408, reason: "request head not complete in time" };
        try {
          chunk = await timedRead(this.#client, left, "head");
        } catch (error) {
          if (error instanceof TimeoutError) {
            return { malformed: 408, reason: "request head not complete in time" };
          }
          throw error;
        }
        if (chunk === null) return null;
      }
      buffer = concatBytes(buffer, chunk);
      const result = parser.parse(buffer);
      if (result.kind === "need_more") continue;
      if (result.kind === "malformed") return { malformed: result.status, reason: result.reason };
      this.#client.unread(buffer.subarray(result.headLength));
      return { head: result.head, raw: buffer.subarray(0, result.headLength) };
    }
  }

  async #one(): Promise<Exchange> {
    const read = await this.#readHead();
    this.#first = false;
    if (read === null) return "close";
    if ("malformed" in read) {
      this.#ctx.ops.debug(
        `proxy ${this.#ctx.info.dst_ip}:${this.#ctx.info.dst_port}: refused request: ${read.reason}`,
      );
      const status = read.malformed;
      await this.#client.stream.write(
        simpleResponse(status, STATUS_TEXT[status] ?? "Bad Request", read.reason, { close: true }),
      ).catch(() => {});
      return "close";
    }
    const { head } = read;
    const raw = forwardedHead(head, read.raw);
    const { scheme, ctx } = this.#o;
    const authority = this.#authority(head);
    const path = head.target.form === "origin" || head.target.form === "absolute" ? head.target.path : "/";
    const url = buildLogUrl(scheme, authority, path);
    let judgement = this.#judge(head, url, authority);
    let logBase: ConnectionLogEvent = {
      type: scheme,
      url,
      method: head.method,
      ...(this.#o.insecure ? { insecure: true } : {}),
      ...(this.#carriesToken(head, scheme, authority, path) ? { github_token: true } : {}),
    };

    if (!judgement.decision.allowed) {
      ctx.logLine(logBase, judgement);
      return await this.#deny(head);
    }
    // extras.md §1: only forwarded requests are checked; a flagged one is a deny of its own.
    const effect = packageVerdictEffect(await this.#checkPackage(url), { audit: ctx.audit });
    if ("logFields" in effect) {
      const { policy, reason, ...flagged } = effect.logFields;
      judgement = { ...judgement, decision: { ...judgement.decision, policy, reason } };
      logBase = { ...logBase, ...flagged };
      if (effect.warning) ctx.ops.warn(`proxy: ${effect.warning}`);
      if (effect.response) {
        ctx.logLine(logBase, judgement);
        return await this.#deny(head, effect.response.body);
      }
    }

    let upstream: Upstream;
    let reused: boolean;
    try {
      reused = this.#reusable(authority);
      upstream = await this.#upstreamFor(authority);
    } catch (error) {
      const kind = error instanceof UpstreamError ? error.kind : "upstream_unreachable";
      ctx.logLine({ ...logBase, error: kind }, judgement);
      ctx.ops.warn(`proxy: ${error instanceof Error ? error.message : error}`);
      const text = kind === "upstream_tls_failed"
        ? "Upstream certificate verification failed"
        : "Cannot reach upstream";
      await this.#client.stream.write(
        simpleResponse(502, "Bad Gateway", text, { close: true, head: head.method === "HEAD" }),
      ).catch(() => {});
      return "close";
    }
    ctx.logLine(logBase, judgement);
    // A reused connection the server closed just now gets one fresh try (only without a body:
    // nothing of the request was consumed from the client yet).
    const retryable = reused && head.body.kind === "none";
    const outcome = await this.#forward(head, raw, upstream, retryable);
    if (outcome !== "retry") return outcome;
    this.#closeUpstream();
    try {
      upstream = await this.#upstreamFor(authority);
    } catch (error) {
      ctx.ops.warn(`proxy: ${error instanceof Error ? error.message : error}`);
      await this.#client.stream.write(
        simpleResponse(502, "Bad Gateway", "Cannot reach upstream", {
          close: true,
          head: head.method === "HEAD",
        }),
      ).catch(() => {});
      return "close";
    }
    const again = await this.#forward(head, raw, upstream, false);
    return again === "retry" ? "close" : again;
  }

  #reusable(authority: string): boolean {
    const current = this.#upstream;
    return current !== undefined && current.key === authority.toLowerCase() && !current.reader.ended;
  }

  /** Host the request is for: the head's authority, else the SNI, else the original IP. */
  #authority(head: RequestHead): string {
    if (head.authority) return head.authority;
    if (this.#o.sni) return this.#o.sni;
    const { dst_ip, dst_port } = this.#ctx.info;
    const defaultPort = this.#o.scheme === "https" ? 443 : 80;
    return dst_port === defaultPort ? dst_ip : `${dst_ip}:${dst_port}`;
  }

  #judge(head: RequestHead, url: string, authority: string): Judgement {
    const { scheme, sni, insecure, ctx } = this.#o;
    if (scheme === "http") {
      return ctx.judge({ type: "http", host: head.host || undefined, url, method: head.method });
    }
    // Requests on an insecure connection are judged as `http` events (corroboration applies).
    if (insecure) return ctx.judge({ type: "http", host: sni ?? authority, url, method: head.method });
    return ctx.judge({ type: "https", host: sni, url, method: head.method });
  }

  /** The package check's verdict; a failing hook fails open like the service would (extras.md). */
  async #checkPackage(url: string): Promise<PackageVerdict> {
    const check = this.#ctx.hooks.packageCheck;
    if (!check) return { verdict: "not_a_package" };
    try {
      return await check.checkRequest(url);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.#ctx.ops.warn(`Cannot check package of ${url}: ${detail}; allowed (fail open)`);
      return { verdict: "unknown" };
    }
  }

  /** extras.md §2 on the unscrubbed URL (the OIDC URL carries a query); header values stay here. */
  #carriesToken(head: RequestHead, scheme: string, authority: string, path: string): boolean {
    const tag = this.#ctx.hooks.tagToken;
    if (!tag) return false;
    try {
      const headers = head.headers.map((h) => [h.key, h.value] as const);
      return tag(`${scheme}://${authority.toLowerCase()}${path}`, headers);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.#ctx.ops.error(`Cannot tag the token of a request: ${detail}`);
      return false;
    }
  }

  async #upstreamFor(authority: string): Promise<Upstream> {
    const key = authority.toLowerCase();
    const current = this.#upstream;
    if (current && this.#reusable(authority)) return current;
    this.#closeUpstream();
    const stream = await this.#o.connectUpstream(hostOf(authority));
    const upstream = { key, reader: new BufferedReader(stream) };
    this.#upstream = upstream;
    return upstream;
  }

  /** 403 with `text`, then the body is discarded (≤ 1 MiB) so the connection stays usable. */
  async #deny(head: RequestHead, text = BLOCKED_TEXT): Promise<Exchange> {
    const body = head.body;
    const tooLarge = body.kind === "length" && body.length > DENIED_BODY_LIMIT;
    // A client waiting for 100-continue may or may not send its body now: do not guess.
    const ambiguous = head.expectContinue && body.kind !== "none";
    const close = !head.keepAlive || tooLarge || ambiguous;
    await this.#client.stream.write(
      simpleResponse(403, "Forbidden", text, { close, head: head.method === "HEAD" }),
    );
    if (close) {
      await this.#client.stream.closeWrite();
      return "close";
    }
    const discarded = await this.#discardBody(head);
    if (!discarded) {
      await this.#client.stream.closeWrite();
      return "close";
    }
    return "keep-alive";
  }

  /** Reads and drops a request body up to the limit; false when it was larger or broken. */
  async #discardBody(head: RequestHead): Promise<boolean> {
    const body = head.body;
    if (body.kind === "none") return true;
    const ms = this.#ctx.timeouts.headMs;
    if (body.kind === "length") {
      let left = body.length;
      while (left > 0) {
        const chunk = await timedRead(this.#client, ms, "body");
        if (chunk === null) return false;
        if (chunk.length > left) this.#client.unread(chunk.subarray(left));
        left -= Math.min(left, chunk.length);
      }
      return true;
    }
    if (body.kind !== "chunked") return false;
    const decoder = new ChunkedDecoder();
    let seen = 0;
    for (;;) {
      const chunk = await timedRead(this.#client, ms, "body");
      if (chunk === null) return false;
      const result = decoder.feed(chunk);
      if (result.kind === "malformed") return false;
      seen += result.consumed;
      if (result.kind === "done") {
        this.#client.unread(chunk.subarray(result.consumed));
        return true;
      }
      if (seen > DENIED_BODY_LIMIT) return false;
    }
  }

  async #forward(
    head: RequestHead,
    raw: Uint8Array,
    upstream: Upstream,
    retryable: boolean,
  ): Promise<Exchange | "retry"> {
    const client = this.#client;
    const upstreamStream = upstream.reader.stream;
    try {
      await upstreamStream.write(raw);
    } catch (error) {
      if (retryable) return "retry";
      throw error;
    }
    let bodyDone = false;
    let bodyError: unknown;
    const bodyPump = this.#copyRequestBody(head, upstreamStream).then(
      () => (bodyDone = true),
      (error) => {
        bodyError = error;
        // The upstream would wait for the rest of the body forever: end the exchange now.
        upstreamStream.close();
      },
    );
    const outcome = await this.#relayResponse(head, upstream, retryable);
    if (outcome === "retry") return "retry";
    if (outcome === "tunnel") {
      await bodyPump;
      if (bodyError) return "close";
      await relayBothWays(client, upstream.reader);
      this.#upstream = undefined;
      return "tunnel";
    }
    if (outcome === "close" || !head.keepAlive) {
      // The body may still be in flight: closing ends it.
      return "close";
    }
    // The response is complete: the request body must be too, or the stream position is lost.
    if (!bodyDone) {
      await Promise.race([bodyPump, new Promise((r) => setTimeout(r, 0))]);
      if (!bodyDone) return "close";
    }
    if (bodyError) return "close";
    upstream.reader.watch();
    return "keep-alive";
  }

  /** Streams the request body by its framing; leaves bytes of the next request in the reader. */
  async #copyRequestBody(head: RequestHead, to: ByteStream): Promise<void> {
    const body = head.body;
    if (body.kind === "none") return;
    const client = this.#client;
    const ms = this.#ctx.timeouts.upstreamIdleMs;
    if (body.kind === "length") {
      let left = body.length;
      while (left > 0) {
        const chunk = await timedRead(client, ms, "request body");
        if (chunk === null) throw new Error("client closed inside the request body");
        const take = Math.min(left, chunk.length);
        if (take < chunk.length) client.unread(chunk.subarray(take));
        await to.write(chunk.subarray(0, take));
        left -= take;
      }
      return;
    }
    if (body.kind === "chunked") {
      const decoder = new ChunkedDecoder();
      for (;;) {
        const chunk = await timedRead(client, ms, "request body");
        if (chunk === null) throw new Error("client closed inside the chunked request body");
        const result = decoder.feed(chunk);
        if (result.kind === "malformed") throw new Error(`malformed chunked request body: ${result.reason}`);
        await to.write(chunk.subarray(0, result.consumed));
        if (result.kind === "done") {
          client.unread(chunk.subarray(result.consumed));
          return;
        }
      }
    }
  }

  /** Reads response heads (1xx first) and streams the final response to the client. */
  async #relayResponse(
    head: RequestHead,
    upstream: Upstream,
    retryable: boolean,
  ): Promise<Exchange | "retry"> {
    const reader = upstream.reader;
    const client = this.#client.stream;
    const ms = this.#ctx.timeouts.upstreamIdleMs;
    let sentAnything = false;
    try {
      for (;;) {
        let buffer: Uint8Array = new Uint8Array(0);
        let response: { head: ResponseHead; headLength: number } | undefined;
        while (!response) {
          let chunk: Uint8Array | null;
          try {
            chunk = await timedRead(reader, ms, "upstream response");
          } catch (error) {
            if (retryable && !sentAnything && buffer.length === 0 && !(error instanceof TimeoutError)) {
              return "retry";
            }
            throw error;
          }
          if (chunk === null && retryable && !sentAnything && buffer.length === 0) return "retry";
          if (chunk === null) throw new Error("upstream closed before a complete response head");
          buffer = concatBytes(buffer, chunk);
          const parsed = parseResponseHead(buffer, head.method);
          if (parsed.kind === "malformed") throw new Error(`malformed upstream response: ${parsed.reason}`);
          if (parsed.kind === "head") response = parsed;
        }
        const framing = response.head.body;
        // The head and the part of a Content-Length body that came with it go out in one write:
        // one TLS record and one TCP segment to the client instead of two (a small response).
        const inline = !response.head.interim && framing.kind === "length"
          ? Math.min(framing.length, buffer.length - response.headLength)
          : 0;
        reader.unread(buffer.subarray(response.headLength + inline));
        // Only an upgrade the (filtered) request asked for may turn the stream into a tunnel.
        if (framing.kind === "tunnel" && !tunnelRequested(head)) {
          throw new Error("upstream switched protocols without being asked");
        }
        await client.write(buffer.subarray(0, response.headLength + inline));
        sentAnything = true;
        if (response.head.interim) continue;
        switch (framing.kind) {
          case "none":
            break;
          case "length":
            await this.#copyLength(reader, framing.length - inline, ms);
            break;
          case "chunked":
            await this.#copyChunked(reader, ms);
            break;
          case "close":
            await this.#copyUntilEnd(reader, ms);
            await client.closeWrite();
            return "close";
          case "tunnel":
            return "tunnel";
        }
        return response.head.keepAlive ? "keep-alive" : "close";
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.#ctx.ops.warn(
        `proxy ${this.#ctx.info.dst_ip}:${this.#ctx.info.dst_port}: ${message}`,
      );
      if (!sentAnything) {
        await client.write(
          simpleResponse(502, "Bad Gateway", "Bad response from upstream", {
            close: true,
            head: head.method === "HEAD",
          }),
        ).catch(() => {});
      }
      this.#closeUpstream();
      return "close";
    }
  }

  async #copyLength(reader: BufferedReader, length: number, ms: number): Promise<void> {
    const client = this.#client.stream;
    let left = length;
    while (left > 0) {
      const chunk = await timedRead(reader, ms, "upstream body");
      if (chunk === null) throw new Error("upstream closed inside the response body");
      const take = Math.min(left, chunk.length);
      if (take < chunk.length) reader.unread(chunk.subarray(take));
      await client.write(chunk.subarray(0, take));
      left -= take;
    }
  }

  async #copyChunked(reader: BufferedReader, ms: number): Promise<void> {
    const client = this.#client.stream;
    const decoder = new ChunkedDecoder();
    for (;;) {
      const chunk = await timedRead(reader, ms, "upstream body");
      if (chunk === null) throw new Error("upstream closed inside the chunked response body");
      const result = decoder.feed(chunk);
      if (result.kind === "malformed") throw new Error(`malformed chunked response: ${result.reason}`);
      await client.write(chunk.subarray(0, result.consumed));
      if (result.kind === "done") {
        reader.unread(chunk.subarray(result.consumed));
        return;
      }
    }
  }

  async #copyUntilEnd(reader: BufferedReader, ms: number): Promise<void> {
    const client = this.#client.stream;
    for (;;) {
      const chunk = await timedRead(reader, ms, "upstream body");
      if (chunk === null) return;
      await client.write(chunk);
    }
  }
}
