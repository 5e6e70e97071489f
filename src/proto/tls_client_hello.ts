// TLS ClientHello classification and field extraction from the first bytes of a TCP stream.
// Pure: no Deno, no node:. Never throws on input bytes: every outcome is a typed result, and the
// work is bounded by the buffered size limit below.

/** TLS plaintext records carry at most 2^14 bytes (RFC 8446 §5.1). */
export const MAX_RECORD_PAYLOAD = 16384;
export const RECORD_HEADER_LENGTH = 5;
/** A ClientHello may span records; we accept up to this many (real ones fit in one or two). */
export const MAX_CLIENT_HELLO_RECORDS = 4;
/** Upper bound of bytes the caller ever has to buffer before a verdict. */
export const MAX_CLIENT_HELLO_BYTES = MAX_CLIENT_HELLO_RECORDS * (RECORD_HEADER_LENGTH + MAX_RECORD_PAYLOAD);

const CONTENT_TYPE_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const EXT_SUPPORTED_VERSIONS = 0x002b;
const SNI_HOST_NAME = 0x00;

export type ClientHello = {
  kind: "client_hello";
  /** host_name SNI, lower-case, trailing dot removed; absent when the client sent none. */
  sni?: string;
  /** ALPN protocol names in client order (empty when no ALPN extension). */
  alpn: string[];
  /** Record-layer version of the first record, e.g. 0x0301. */
  recordVersion: number;
  /** ClientHello.legacy_version, e.g. 0x0303. */
  legacyVersion: number;
  /** supported_versions extension contents (empty when absent), GREASE values included. */
  supportedVersions: number[];
  cipherSuiteCount: number;
  /** Extension types in order. */
  extensions: number[];
  /** Bytes of the stream that the ClientHello records occupy (the proxy re-plays them). */
  recordBytes: number;
};

export type ClientHelloResult =
  | { kind: "need_more"; /** total buffered length needed before the next attempt */ needed: number }
  | { kind: "not_tls" }
  | { kind: "malformed"; reason: string }
  | ClientHello;

/** Tells whether a stream starting with these bytes can be TLS (false as soon as it cannot). */
export function mayBeTls(bytes: Uint8Array): boolean {
  if (bytes.length >= 1 && bytes[0] !== CONTENT_TYPE_HANDSHAKE) return false;
  if (bytes.length >= 2 && bytes[1] !== 0x03) return false;
  return true;
}

/**
 * Parses the ClientHello at the start of `bytes` (the stream's first bytes as buffered so far).
 * `need_more.needed` is the total length to buffer before calling again; it never exceeds
 * MAX_CLIENT_HELLO_BYTES.
 */
export function parseClientHello(bytes: Uint8Array): ClientHelloResult {
  if (!mayBeTls(bytes)) return { kind: "not_tls" };
  if (bytes.length < RECORD_HEADER_LENGTH) return { kind: "need_more", needed: RECORD_HEADER_LENGTH };

  // Gather the handshake message from as many records as it needs.
  const recordVersion = (bytes[1] << 8) | bytes[2];
  const fragments: Uint8Array[] = [];
  let gathered = 0;
  let offset = 0;
  let messageLength = -1;
  for (let records = 0;; records++) {
    if (records >= MAX_CLIENT_HELLO_RECORDS) {
      return { kind: "malformed", reason: `ClientHello spans more than ${MAX_CLIENT_HELLO_RECORDS} records` };
    }
    if (bytes.length < offset + RECORD_HEADER_LENGTH) {
      return { kind: "need_more", needed: offset + RECORD_HEADER_LENGTH };
    }
    if (bytes[offset] !== CONTENT_TYPE_HANDSHAKE) {
      return { kind: "malformed", reason: "non-handshake record inside the ClientHello" };
    }
    if (bytes[offset + 1] !== 0x03) return { kind: "malformed", reason: "bad record version" };
    const length = (bytes[offset + 3] << 8) | bytes[offset + 4];
    if (length === 0) return { kind: "malformed", reason: "empty handshake record" };
    if (length > MAX_RECORD_PAYLOAD) return { kind: "malformed", reason: "record longer than 16384 bytes" };
    const end = offset + RECORD_HEADER_LENGTH + length;
    if (bytes.length < end) return { kind: "need_more", needed: end };
    fragments.push(bytes.subarray(offset + RECORD_HEADER_LENGTH, end));
    gathered += length;
    offset = end;
    if (messageLength < 0 && gathered >= 4) {
      const first = joinPrefix(fragments, 4);
      if (first[0] !== HANDSHAKE_CLIENT_HELLO) {
        return { kind: "malformed", reason: "first handshake message is not a ClientHello" };
      }
      messageLength = (first[1] << 16) | (first[2] << 8) | first[3];
      if (messageLength + 4 > MAX_CLIENT_HELLO_RECORDS * MAX_RECORD_PAYLOAD) {
        return { kind: "malformed", reason: "ClientHello too large" };
      }
    }
    if (messageLength >= 0 && gathered >= messageLength + 4) break;
  }
  const message = joinPrefix(fragments, messageLength + 4).subarray(4);
  const result = parseClientHelloBody(message);
  if (result.kind !== "client_hello") return result;
  result.recordVersion = recordVersion;
  result.recordBytes = offset;
  return result;
}

function joinPrefix(parts: Uint8Array[], length: number): Uint8Array {
  if (parts[0].length >= length) return parts[0].subarray(0, length);
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    const take = Math.min(part.length, length - at);
    out.set(part.subarray(0, take), at);
    at += take;
    if (at === length) break;
  }
  return out;
}

/** Bounds-checked big-endian reader; `fail` records the first problem and stops all reads. */
class Reader {
  pos = 0;
  failure: string | undefined;
  constructor(readonly bytes: Uint8Array, readonly end = bytes.length) {}
  remaining(): number {
    return this.end - this.pos;
  }
  fail(reason: string): void {
    if (this.failure === undefined) this.failure = reason;
    this.pos = this.end;
  }
  u8(what: string): number {
    if (this.remaining() < 1) return this.fail(`truncated ${what}`), 0;
    return this.bytes[this.pos++];
  }
  u16(what: string): number {
    if (this.remaining() < 2) return this.fail(`truncated ${what}`), 0;
    const v = (this.bytes[this.pos] << 8) | this.bytes[this.pos + 1];
    this.pos += 2;
    return v;
  }
  /** Returns a sub-reader over the next `length` bytes and skips them. */
  take(length: number, what: string): Reader {
    if (this.remaining() < length) {
      this.fail(`truncated ${what}`);
      return new Reader(this.bytes, this.pos);
    }
    const sub = new Reader(this.bytes, this.pos + length);
    sub.pos = this.pos;
    this.pos += length;
    return sub;
  }
}

function parseClientHelloBody(message: Uint8Array): ClientHelloResult {
  const r = new Reader(message);
  const legacyVersion = r.u16("legacy_version");
  if (r.failure === undefined && (legacyVersion >> 8) !== 0x03) {
    return { kind: "malformed", reason: "bad ClientHello version" };
  }
  r.take(32, "random");
  const sessionIdLength = r.u8("session id length");
  if (sessionIdLength > 32) return { kind: "malformed", reason: "session id longer than 32 bytes" };
  r.take(sessionIdLength, "session id");
  const suitesLength = r.u16("cipher suites length");
  if (r.failure === undefined && (suitesLength === 0 || suitesLength % 2 !== 0)) {
    return { kind: "malformed", reason: "bad cipher suites length" };
  }
  r.take(suitesLength, "cipher suites");
  const compressionLength = r.u8("compression methods length");
  if (r.failure === undefined && compressionLength === 0) {
    return { kind: "malformed", reason: "no compression methods" };
  }
  r.take(compressionLength, "compression methods");
  if (r.failure !== undefined) return { kind: "malformed", reason: r.failure };

  const hello: ClientHello = {
    kind: "client_hello",
    alpn: [],
    recordVersion: 0,
    legacyVersion,
    supportedVersions: [],
    cipherSuiteCount: suitesLength / 2,
    extensions: [],
    recordBytes: 0,
  };
  // Extensions are optional (pre-TLS 1.2 clients may omit the block entirely).
  if (r.remaining() === 0) return hello;
  const extensionsLength = r.u16("extensions length");
  if (extensionsLength !== r.remaining()) {
    return { kind: "malformed", reason: "extensions length does not match the ClientHello" };
  }
  const seen = new Set<number>();
  while (r.remaining() > 0) {
    const type = r.u16("extension type");
    const length = r.u16("extension length");
    const body = r.take(length, "extension");
    if (r.failure !== undefined) return { kind: "malformed", reason: r.failure };
    if (seen.has(type)) return { kind: "malformed", reason: `duplicate extension ${type}` };
    seen.add(type);
    hello.extensions.push(type);
    let problem: string | undefined;
    if (type === EXT_SERVER_NAME) problem = readServerName(body, hello);
    else if (type === EXT_ALPN) problem = readAlpn(body, hello);
    else if (type === EXT_SUPPORTED_VERSIONS) problem = readSupportedVersions(body, hello);
    if (problem !== undefined) return { kind: "malformed", reason: problem };
  }
  return hello;
}

function readServerName(r: Reader, hello: ClientHello): string | undefined {
  // An empty server_name extension is what servers send back; tolerate it from clients too.
  if (r.remaining() === 0) return undefined;
  const listLength = r.u16("server name list length");
  if (r.failure === undefined && listLength !== r.remaining()) return "server name list length mismatch";
  if (listLength === 0) return "empty server name list";
  while (r.remaining() > 0) {
    const nameType = r.u8("server name type");
    const length = r.u16("server name length");
    const name = r.take(length, "server name");
    if (r.failure !== undefined) return r.failure;
    if (nameType !== SNI_HOST_NAME) continue;
    if (hello.sni !== undefined) return "more than one host_name in SNI";
    const host = decodeHostName(name.bytes, name.pos, name.end);
    if (host === undefined) return "SNI is not a valid host name";
    hello.sni = host;
  }
  return undefined;
}

/** Accepts LDH names plus `_` (seen in the wild), 1..253 chars, labels 1..63; lower-cases. */
function decodeHostName(bytes: Uint8Array, start: number, end: number): string | undefined {
  if (end > start && bytes[end - 1] === 0x2e) end--; // one trailing dot
  const length = end - start;
  if (length < 1 || length > 253) return undefined;
  let label = 0;
  let out = "";
  for (let i = start; i < end; i++) {
    let c = bytes[i];
    if (c === 0x2e) {
      if (label === 0) return undefined;
      label = 0;
    } else {
      const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
        c === 0x2d || c === 0x5f;
      if (!ok) return undefined;
      if (++label > 63) return undefined;
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
    }
    out += String.fromCharCode(c);
  }
  if (label === 0) return undefined;
  return out;
}

function readAlpn(r: Reader, hello: ClientHello): string | undefined {
  const listLength = r.u16("ALPN list length");
  if (r.failure === undefined && listLength !== r.remaining()) return "ALPN list length mismatch";
  if (listLength === 0) return "empty ALPN list";
  while (r.remaining() > 0) {
    const length = r.u8("ALPN name length");
    if (r.failure === undefined && length === 0) return "empty ALPN protocol name";
    const name = r.take(length, "ALPN name");
    if (r.failure !== undefined) return r.failure;
    let s = "";
    for (let i = name.pos; i < name.end; i++) {
      const c = name.bytes[i];
      // Protocol ids are opaque bytes, but anything outside printable ASCII is escaped for safety.
      s += c >= 0x21 && c <= 0x7e && c !== 0x25
        ? String.fromCharCode(c)
        : `%${c.toString(16).padStart(2, "0")}`;
    }
    hello.alpn.push(s);
  }
  return undefined;
}

function readSupportedVersions(r: Reader, hello: ClientHello): string | undefined {
  const length = r.u8("supported versions length");
  if (r.failure === undefined && (length !== r.remaining() || length === 0 || length % 2 !== 0)) {
    return "bad supported_versions length";
  }
  while (r.remaining() > 0) hello.supportedVersions.push(r.u16("supported version"));
  return r.failure;
}

/** TLS 1.3 when offered via supported_versions (GREASE ignored), else the legacy version. */
export function highestOfferedVersion(hello: ClientHello): number {
  let best = hello.legacyVersion;
  for (const v of hello.supportedVersions) {
    if ((v & 0x0f0f) === 0x0a0a) continue; // GREASE
    if (v > best) best = v;
  }
  return best;
}
