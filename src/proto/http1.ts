// HTTP/1.x message heads: request-head parser (client side), response-head parser (upstream
// side), chunked-body framing decoder, and a quick classifier. Pure: no Deno, no node:.
// Strict on purpose: the proxy forwards bytes to servers whose parsers may differ, so anything a
// server could read differently (request smuggling) is rejected instead of guessed.

export const MAX_HEAD_BYTES = 64 * 1024;
export const MAX_HEADER_COUNT = 100;
/** Empty lines tolerated before a request line (RFC 9112 §2.2: extra CRLF after a body). */
const MAX_LEADING_EMPTY_LINES = 4;

export type HeadLimits = { maxHeadBytes?: number; maxHeaderCount?: number };

export type Header = { name: string; /** lower-case name */ key: string; value: string };

export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  /** response only: the body runs until the server closes the connection */
  | { kind: "close" }
  /** response only: 101 Switching Protocols or a 2xx answer to CONNECT; bytes after the head are a tunnel */
  | { kind: "tunnel" };

export type RequestTarget =
  | { form: "origin"; path: string }
  | { form: "absolute"; scheme: "http" | "https"; authority: string; path: string }
  | { form: "authority"; authority: string }
  | { form: "asterisk" };

export type RequestHead = {
  method: string;
  /** raw request-target as sent */
  rawTarget: string;
  target: RequestTarget;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1 */
  minorVersion: number;
  headers: Header[];
  /** authority the request is for: absolute-form/authority-form target, else the Host header */
  authority?: string;
  /** the Host header value (absent in HTTP/1.0 requests without one) */
  host?: string;
  body: BodyFraming;
  /** lower-case tokens of all Connection headers */
  connection: string[];
  keepAlive: boolean;
  /** Upgrade header value when Connection lists "upgrade" */
  upgrade?: string;
  expectContinue: boolean;
};

export type ResponseHead = {
  status: number;
  reason: string;
  minorVersion: number;
  headers: Header[];
  body: BodyFraming;
  /** 1xx other than 101: another response head follows on the stream */
  interim: boolean;
  connection: string[];
  keepAlive: boolean;
  upgrade?: string;
};

export type Malformed = {
  kind: "malformed";
  reason: string; /** status to answer a client with */
  status: number;
};

export type HeadResult<T> =
  | { kind: "need_more" }
  | Malformed
  | {
    kind: "head";
    head: T; /** bytes the head occupies, including the final empty line */
    headLength: number;
  };

// ---------------------------------------------------------------- character classes

const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!TCHAR[s.charCodeAt(i)]) return false;
  return true;
}

function latin1(bytes: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 4096)));
  }
  return s;
}

function malformed(reason: string, status = 400): Malformed {
  return { kind: "malformed", reason, status };
}

// ---------------------------------------------------------------- head splitting

/**
 * Finds the end of a head (CRLF CRLF) starting the search at `from`. Returns the index after the
 * terminator, -1 if not yet present, or a Malformed for a bare CR/LF or NUL (which servers treat
 * differently). `start` is where the head begins.
 */
function findHeadEnd(bytes: Uint8Array, start: number, from: number, end: number): number | Malformed {
  for (let i = Math.max(from, start); i < end; i++) {
    const c = bytes[i];
    if (c === 0x0a) {
      if (i === start || bytes[i - 1] !== 0x0d) return malformed("bare LF in message head");
      if (i - start >= 3 && bytes[i - 2] === 0x0a && bytes[i - 3] === 0x0d) return i + 1;
    } else if (bytes[i - 1] === 0x0d && i > start) {
      return malformed("bare CR in message head");
    } else if (c === 0) {
      return malformed("NUL in message head");
    }
  }
  // A trailing CR is fine for now; the next chunk decides.
  return -1;
}

type Lines = { lines: string[]; headLength: number } | Malformed | null;

function splitHead(bytes: Uint8Array, start: number, scanFrom: number, maxBytes: number): Lines {
  const limit = Math.min(bytes.length, start + maxBytes);
  const end = findHeadEnd(bytes, start, scanFrom, limit);
  if (typeof end !== "number") return end;
  if (end < 0) {
    if (bytes.length - start >= maxBytes) return malformed("message head too large", 431);
    return null;
  }
  const text = latin1(bytes, start, end - 4);
  return { lines: text.split("\r\n"), headLength: end };
}

// ---------------------------------------------------------------- header fields

type ParsedHeaders = {
  headers: Header[];
  contentLength?: number;
  contentLengthCount: number;
  transferEncoding: string[];
  connection: string[];
  hosts: string[];
  upgrade?: string;
  expect?: string;
};

function parseHeaderLines(lines: string[], first: number, maxCount: number): ParsedHeaders | Malformed {
  const out: ParsedHeaders = {
    headers: [],
    contentLengthCount: 0,
    transferEncoding: [],
    connection: [],
    hosts: [],
  };
  const lengths: string[] = [];
  for (let i = first; i < lines.length; i++) {
    const line = lines[i];
    if (line.length === 0) return malformed("empty line inside the head");
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) return malformed("obsolete line folding in header");
    const colon = line.indexOf(":");
    if (colon <= 0) return malformed("header line without a name");
    const name = line.slice(0, colon);
    if (!isToken(name)) return malformed(`invalid header name`);
    const value = trimOws(line.slice(colon + 1));
    for (let j = 0; j < value.length; j++) {
      const c = value.charCodeAt(j);
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) return malformed(`control character in header ${name}`);
    }
    if (out.headers.length >= maxCount) return malformed("too many header fields", 431);
    const key = name.toLowerCase();
    out.headers.push({ name, key, value });
    switch (key) {
      case "content-length":
        for (const part of value.split(",")) lengths.push(trimOws(part));
        break;
      case "transfer-encoding":
        for (const part of value.split(",")) {
          const coding = trimOws(part).toLowerCase();
          if (coding.length > 0) out.transferEncoding.push(coding);
        }
        if (out.transferEncoding.length === 0) return malformed("empty Transfer-Encoding");
        break;
      case "connection":
        for (const part of value.split(",")) {
          const token = trimOws(part).toLowerCase();
          if (token.length > 0) out.connection.push(token);
        }
        break;
      case "host":
        out.hosts.push(value);
        break;
      case "upgrade":
        if (out.upgrade !== undefined) return malformed("duplicate Upgrade header");
        out.upgrade = value;
        break;
      case "expect":
        out.expect = value.toLowerCase();
        break;
    }
  }
  out.contentLengthCount = lengths.length;
  if (lengths.length > 0) {
    const first = lengths[0];
    for (const l of lengths) if (l !== first) return malformed("conflicting Content-Length values");
    if (!/^[0-9]{1,15}$/.test(first)) return malformed("invalid Content-Length");
    out.contentLength = Number(first);
  }
  return out;
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return s.slice(a, b);
}

/** Transfer-Encoding must end in exactly one `chunked`. Returns true for chunked, a reason otherwise. */
function checkChunked(codings: string[]): true | string {
  const chunked = codings.filter((c) => c === "chunked").length;
  if (chunked === 0) return "Transfer-Encoding without chunked";
  if (chunked > 1) return "chunked applied more than once";
  if (codings[codings.length - 1] !== "chunked") return "chunked is not the final transfer coding";
  return true;
}

/** host [":" port]; reg-name, IPv4 or [IPv6]; no userinfo. Returns a reason when invalid. */
export function checkAuthority(authority: string): string | undefined {
  if (authority.length === 0) return "empty authority";
  if (authority.length > 1024) return "authority too long";
  let host = authority;
  let port: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) return "unterminated IPv6 literal";
    host = authority.slice(1, close);
    if (!/^[0-9A-Fa-f:.]+$/.test(host)) return "invalid IPv6 literal";
    const rest = authority.slice(close + 1);
    if (rest.length > 0) {
      if (!rest.startsWith(":")) return "garbage after IPv6 literal";
      port = rest.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(":");
    if (colon >= 0) {
      host = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    }
    if (!/^[A-Za-z0-9._~!$&'()*+,;=%-]+$/.test(host)) return "invalid host";
  }
  if (port !== undefined && port.length > 0) {
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return "invalid port";
  }
  return undefined;
}

// ---------------------------------------------------------------- request head

const HTTP_VERSION = /^HTTP\/1\.([01])$/;

/** Parses one request head from `bytes` (buffered stream bytes starting at a message boundary). */
export function parseRequestHead(bytes: Uint8Array, limits: HeadLimits = {}): HeadResult<RequestHead> {
  return new RequestHeadParser(limits).parse(bytes);
}

/**
 * Incremental request-head parser: call `parse` with the whole buffered data each time more arrives;
 * it resumes the terminator search where it stopped, so total work stays linear.
 */
export class RequestHeadParser {
  #scanned = 0;
  readonly #maxBytes: number;
  readonly #maxCount: number;
  constructor(limits: HeadLimits = {}) {
    this.#maxBytes = limits.maxHeadBytes ?? MAX_HEAD_BYTES;
    this.#maxCount = limits.maxHeaderCount ?? MAX_HEADER_COUNT;
  }

  /** Resets the scan state for the next message on the same connection. */
  reset(): void {
    this.#scanned = 0;
  }

  parse(bytes: Uint8Array): HeadResult<RequestHead> {
    let start = 0;
    for (
      let empty = 0;
      start + 1 < bytes.length && bytes[start] === 0x0d && bytes[start + 1] === 0x0a;
      empty++
    ) {
      if (empty >= MAX_LEADING_EMPTY_LINES) return malformed("too many empty lines before the request line");
      start += 2;
    }
    if (bytes.length > start) {
      const c = bytes[start];
      if (c === 0x0d) return bytes.length === start + 1 ? { kind: "need_more" } : malformed("bare CR");
      if (!TCHAR[c]) return malformed("garbage before the request line");
    }
    const split = splitHead(bytes, start, Math.max(start, this.#scanned - 3), this.#maxBytes);
    if (split === null) {
      this.#scanned = bytes.length;
      return { kind: "need_more" };
    }
    if ("kind" in split) return split;
    const head = buildRequestHead(split.lines, this.#maxCount);
    if ("kind" in head) return head;
    return { kind: "head", head, headLength: split.headLength };
  }
}

function buildRequestHead(lines: string[], maxCount: number): RequestHead | Malformed {
  const requestLine = lines[0];
  const parts = requestLine.split(" ");
  if (parts.length !== 3) return malformed("request line is not METHOD SP TARGET SP VERSION");
  const [method, rawTarget, version] = parts;
  if (!isToken(method)) return malformed("invalid method");
  const versionMatch = HTTP_VERSION.exec(version);
  if (!versionMatch) {
    return /^HTTP\/\d\.\d$/.test(version)
      ? malformed("unsupported HTTP version", 505)
      : malformed("invalid HTTP version");
  }
  const minorVersion = Number(versionMatch[1]);
  if (rawTarget.length === 0) return malformed("empty request target");
  for (let i = 0; i < rawTarget.length; i++) {
    const c = rawTarget.charCodeAt(i);
    // "#" is not part of a request-target; servers disagree on what follows it, so refuse it.
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return malformed("invalid character in request target");
  }
  const target = parseTarget(method, rawTarget);
  if (typeof target === "string") return malformed(target);

  const parsed = parseHeaderLines(lines, 1, maxCount);
  if ("kind" in parsed) return parsed;

  if (parsed.hosts.length > 1) return malformed("more than one Host header");
  const host = parsed.hosts[0];
  if (minorVersion === 1 && host === undefined) return malformed("HTTP/1.1 request without Host");
  if (host !== undefined) {
    const problem = checkAuthority(host);
    if (problem && !(host === "" && target.form !== "origin")) {
      return malformed(`bad Host header: ${problem}`);
    }
  }
  let authority: string | undefined = host === "" ? undefined : host;
  if (target.form === "absolute") {
    // Servers differ on which one wins; a request naming two hosts is refused rather than guessed.
    if (
      host && withoutDefaultPort(host, target.scheme) !== withoutDefaultPort(target.authority, target.scheme)
    ) {
      return malformed("Host header differs from the request target");
    }
    authority = target.authority;
  } else if (target.form === "authority") {
    authority = target.authority;
  }

  let body: BodyFraming = { kind: "none" };
  if (parsed.transferEncoding.length > 0) {
    if (parsed.contentLengthCount > 0) return malformed("both Transfer-Encoding and Content-Length");
    if (minorVersion === 0) return malformed("Transfer-Encoding in an HTTP/1.0 request");
    const chunked = checkChunked(parsed.transferEncoding);
    if (chunked !== true) return malformed(chunked, 400);
    body = { kind: "chunked" };
  } else if (parsed.contentLengthCount > 1) {
    return malformed("duplicate Content-Length");
  } else if (parsed.contentLength !== undefined && parsed.contentLength > 0) {
    body = { kind: "length", length: parsed.contentLength };
  }

  const keepAlive = minorVersion === 1
    ? !parsed.connection.includes("close")
    : parsed.connection.includes("keep-alive") && !parsed.connection.includes("close");
  const head: RequestHead = {
    method,
    rawTarget,
    target,
    minorVersion,
    headers: parsed.headers,
    body,
    connection: parsed.connection,
    keepAlive,
    expectContinue: parsed.expect === "100-continue",
  };
  if (authority !== undefined) head.authority = authority;
  if (host !== undefined) head.host = host;
  if (parsed.upgrade !== undefined && parsed.connection.includes("upgrade")) head.upgrade = parsed.upgrade;
  return head;
}

function withoutDefaultPort(authority: string, scheme: "http" | "https"): string {
  const lower = authority.toLowerCase();
  const suffix = scheme === "http" ? ":80" : ":443";
  return lower.endsWith(suffix) ? lower.slice(0, -suffix.length) : lower;
}

function parseTarget(method: string, raw: string): RequestTarget | string {
  if (method === "CONNECT") {
    if (raw.includes("/") || raw.includes("@")) return "CONNECT target must be host:port";
    const problem = checkAuthority(raw);
    if (problem) return `bad CONNECT target: ${problem}`;
    if (!/:[0-9]+$/.test(raw)) return "CONNECT target without port";
    return { form: "authority", authority: raw };
  }
  if (raw === "*") {
    return method === "OPTIONS" ? { form: "asterisk" } : "asterisk target outside OPTIONS";
  }
  if (raw.startsWith("/")) return { form: "origin", path: raw };
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw);
  if (!scheme) return "request target is neither origin-form nor absolute-form";
  const schemeName = scheme[1].toLowerCase();
  if (schemeName !== "http" && schemeName !== "https") return `unsupported scheme ${schemeName}`;
  const rest = raw.slice(scheme[0].length);
  let end = rest.length;
  for (const stop of ["/", "?"]) {
    const at = rest.indexOf(stop);
    if (at >= 0 && at < end) end = at;
  }
  const authority = rest.slice(0, end);
  if (authority.includes("@")) return "userinfo in request target";
  const problem = checkAuthority(authority);
  if (problem) return `bad request target authority: ${problem}`;
  let path = rest.slice(end);
  if (!path.startsWith("/")) path = "/" + path;
  return { form: "absolute", scheme: schemeName, authority, path };
}

/** Values of all headers called `name` (case-insensitive), in order. */
export function headerValues(headers: Header[], name: string): string[] {
  const key = name.toLowerCase();
  const out: string[] = [];
  for (const h of headers) if (h.key === key) out.push(h.value);
  return out;
}

// ---------------------------------------------------------------- response head

const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: (.*))?$/;

/**
 * Parses an upstream response head. `requestMethod` decides body framing (HEAD, CONNECT).
 * Call again with the bytes after an interim (1xx) head.
 */
export function parseResponseHead(
  bytes: Uint8Array,
  requestMethod: string,
  limits: HeadLimits = {},
): HeadResult<ResponseHead> {
  if (bytes.length > 0 && bytes[0] !== 0x48 /* H */) {
    return malformed("response does not start with HTTP/", 502);
  }
  const split = splitHead(bytes, 0, 0, limits.maxHeadBytes ?? MAX_HEAD_BYTES);
  if (split === null) return { kind: "need_more" };
  if ("kind" in split) return { ...split, status: 502 };
  const match = STATUS_LINE.exec(split.lines[0]);
  if (!match) return malformed("invalid status line", 502);
  const minorVersion = Number(match[1]);
  const status = Number(match[2]);
  if (status < 100) return malformed("invalid status code", 502);
  const reason = match[3] ?? "";
  for (let i = 0; i < reason.length; i++) {
    const c = reason.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return malformed("control character in reason phrase", 502);
  }
  const parsed = parseHeaderLines(split.lines, 1, limits.maxHeaderCount ?? MAX_HEADER_COUNT);
  if ("kind" in parsed) return { ...parsed, status: 502 };

  const interim = status >= 100 && status < 200 && status !== 101;
  let body: BodyFraming;
  if (status === 101) {
    body = { kind: "tunnel" };
  } else if (requestMethod === "CONNECT" && status >= 200 && status < 300) {
    body = { kind: "tunnel" };
  } else if (interim || status === 204 || status === 304 || requestMethod === "HEAD") {
    body = { kind: "none" };
  } else if (parsed.transferEncoding.length > 0) {
    if (parsed.contentLengthCount > 0) return malformed("both Transfer-Encoding and Content-Length", 502);
    // RFC 9112 §6.3: a response whose final coding is not chunked is delimited by close.
    const chunked = checkChunked(parsed.transferEncoding);
    body = chunked === true ? { kind: "chunked" } : { kind: "close" };
  } else if (parsed.contentLength !== undefined) {
    body = { kind: "length", length: parsed.contentLength };
  } else {
    body = { kind: "close" };
  }
  const keepAlive = body.kind !== "close" && body.kind !== "tunnel" &&
    (minorVersion === 1
      ? !parsed.connection.includes("close")
      : parsed.connection.includes("keep-alive") && !parsed.connection.includes("close"));
  const head: ResponseHead = {
    status,
    reason,
    minorVersion,
    headers: parsed.headers,
    body,
    interim,
    connection: parsed.connection,
    keepAlive,
  };
  if (parsed.upgrade !== undefined) head.upgrade = parsed.upgrade;
  return { kind: "head", head, headLength: split.headLength };
}

// ---------------------------------------------------------------- chunked framing

export type ChunkedResult =
  /** all `consumed` bytes of this input belong to the body; more is needed */
  | { kind: "body"; consumed: number }
  /** the body ends after `consumed` bytes of this input; the rest is the next message */
  | { kind: "done"; consumed: number }
  | { kind: "malformed"; reason: string };

const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

const enum ChunkState {
  SizeLine,
  Data,
  DataCr,
  DataLf,
  Trailer,
  Done,
  Failed,
}

/**
 * Streaming chunked-body framer: feed it the bytes after the head as they arrive; it tells where
 * the body ends without buffering it (only a chunk-size line or trailer line is kept, bounded).
 */
export class ChunkedDecoder {
  #state = ChunkState.SizeLine;
  #line = ""; // current size line or trailer line (without CRLF)
  #sawCr = false;
  #remaining = 0; // bytes left in the current chunk
  #trailerBytes = 0;
  #failure = "";
  /** Sum of chunk-data bytes seen so far. */
  dataBytes = 0;

  get done(): boolean {
    return this.#state === ChunkState.Done;
  }

  feed(bytes: Uint8Array): ChunkedResult {
    if (this.#state === ChunkState.Failed) return { kind: "malformed", reason: this.#failure };
    if (this.#state === ChunkState.Done) return { kind: "done", consumed: 0 };
    let i = 0;
    const n = bytes.length;
    while (i < n) {
      switch (this.#state) {
        case ChunkState.Data: {
          const take = Math.min(this.#remaining, n - i);
          i += take;
          this.#remaining -= take;
          this.dataBytes += take;
          if (this.#remaining === 0) this.#state = ChunkState.DataCr;
          break;
        }
        case ChunkState.DataCr:
          if (bytes[i++] !== 0x0d) return this.#fail("chunk data not followed by CRLF");
          this.#state = ChunkState.DataLf;
          break;
        case ChunkState.DataLf:
          if (bytes[i++] !== 0x0a) return this.#fail("chunk data not followed by CRLF");
          this.#state = ChunkState.SizeLine;
          break;
        case ChunkState.SizeLine:
        case ChunkState.Trailer: {
          const c = bytes[i++];
          if (this.#sawCr) {
            if (c !== 0x0a) return this.#fail("bare CR in chunked framing");
            this.#sawCr = false;
            const problem = this.#state === ChunkState.SizeLine
              ? this.#endSizeLine()
              : this.#endTrailerLine();
            if (problem) return this.#fail(problem);
            if ((this.#state as ChunkState) === ChunkState.Done) return { kind: "done", consumed: i };
          } else if (c === 0x0d) {
            this.#sawCr = true;
          } else if (c === 0x0a) {
            return this.#fail("bare LF in chunked framing");
          } else {
            if (this.#state === ChunkState.Trailer && ++this.#trailerBytes > MAX_TRAILER_BYTES) {
              return this.#fail("trailer section too large");
            }
            if (this.#line.length >= MAX_CHUNK_LINE) return this.#fail("chunk line too long");
            this.#line += String.fromCharCode(c);
          }
          break;
        }
      }
    }
    return { kind: "body", consumed: n };
  }

  #fail(reason: string): ChunkedResult {
    this.#state = ChunkState.Failed;
    this.#failure = reason;
    return { kind: "malformed", reason };
  }

  #endSizeLine(): string | undefined {
    const line = this.#line;
    this.#line = "";
    const semi = line.indexOf(";");
    const sizeText = semi >= 0 ? line.slice(0, semi) : line;
    if (!/^[0-9A-Fa-f]{1,12}$/.test(sizeText)) return "invalid chunk size";
    if (semi >= 0) {
      for (let i = semi; i < line.length; i++) {
        const c = line.charCodeAt(i);
        if ((c < 0x20 && c !== 0x09) || c === 0x7f) return "control character in chunk extension";
      }
    }
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      this.#state = ChunkState.Trailer;
    } else {
      this.#remaining = size;
      this.#state = ChunkState.Data;
    }
    return undefined;
  }

  #endTrailerLine(): string | undefined {
    const line = this.#line;
    this.#line = "";
    if (line.length === 0) {
      this.#state = ChunkState.Done;
      return undefined;
    }
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) return "obsolete line folding in trailer";
    const colon = line.indexOf(":");
    if (colon <= 0 || !isToken(line.slice(0, colon))) return "invalid trailer field";
    return undefined;
  }
}

// ---------------------------------------------------------------- classification

const KNOWN_METHODS = [
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
  "PROPFIND",
  "PROPPATCH",
  "MKCOL",
  "COPY",
  "MOVE",
  "LOCK",
  "UNLOCK",
  "REPORT",
  "MKACTIVITY",
  "CHECKOUT",
  "MERGE",
  "SEARCH",
  "PURGE",
];

/** "http" once the bytes start with a known method and a space; "need_more" while they still could. */
export function classifyHttpRequestStart(bytes: Uint8Array): "http" | "not_http" | "need_more" {
  let start = 0;
  while (start + 1 < bytes.length && bytes[start] === 0x0d && bytes[start + 1] === 0x0a && start < 8) {
    start += 2;
  }
  let couldBe = false;
  for (const method of KNOWN_METHODS) {
    const want = method.length + 1;
    const have = Math.min(bytes.length - start, want);
    let match = true;
    for (let i = 0; i < have; i++) {
      const expected = i < method.length ? method.charCodeAt(i) : 0x20;
      if (bytes[start + i] !== expected) {
        match = false;
        break;
      }
    }
    if (!match) continue;
    if (have === want) return "http";
    couldBe = true;
  }
  return couldBe ? "need_more" : "not_http";
}

/** True when the bytes start like an HTTP/1.x request (a known method followed by a space). */
export function looksLikeHttpRequest(bytes: Uint8Array): boolean {
  return classifyHttpRequestStart(bytes) === "http";
}
