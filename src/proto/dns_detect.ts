// DNS detection and minimal reading: is a UDP payload (on any port) a DNS query, DNS-over-TCP
// framing, and a question-section reader. Pure: no Deno, no node:, no Buffer. Bounded work:
// names are at most 255 octets and compression pointers must point strictly backwards.

export const DNS_HEADER_LENGTH = 12;
const MAX_NAME_OCTETS = 255;
const MAX_POINTER_HOPS = 32;
/** Questions decoded into the result at most (the count from the header is reported as is). */
export const MAX_QUESTIONS_REPORTED = 16;

/**
 * Skips the name at `pos` without decoding it. Returns the offset after the name in the message
 * (after the first pointer when compressed), or -1 when the name is malformed or truncated.
 */
function skipName(msg: Uint8Array, start: number, end: number, pos: number): number {
  let after = -1;
  let octets = 0;
  let hops = 0;
  let floor = pos; // pointers must land strictly before the label that holds them
  for (;;) {
    if (pos >= end) return -1;
    const len = msg[pos];
    if (len === 0) return after >= 0 ? after : pos + 1;
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= end) return -1;
      const target = start + (((len & 0x3f) << 8) | msg[pos + 1]);
      if (target >= floor || ++hops > MAX_POINTER_HOPS) return -1;
      if (after < 0) after = pos + 2;
      pos = target;
      floor = target;
      continue;
    }
    if (kind !== 0) return -1; // 0x40 / 0x80 label types are obsolete or reserved
    octets += len + 1;
    if (octets + 1 > MAX_NAME_OCTETS) return -1;
    pos += len + 1;
  }
}

/**
 * True when `payload[offset .. offset+length)` parses as a DNS query: QR=0, opcode 0 (QUERY), at
 * least one question, every question well-formed, and the other sections' counts fit the rest.
 * Allocates nothing (used per packet on the NFQUEUE path).
 */
export function looksLikeDnsQuery(
  payload: Uint8Array,
  offset = 0,
  length = payload.length - offset,
): boolean {
  if (offset < 0 || length < DNS_HEADER_LENGTH + 5 || offset + length > payload.length) return false;
  const p = offset;
  const end = offset + length;
  const flags = (payload[p + 2] << 8) | payload[p + 3];
  if (flags & 0x8000) return false; // QR: a response
  if ((flags >> 11) & 0x0f) return false; // opcode other than QUERY
  if (flags & 0x000f) return false; // RCODE is 0 in a query
  const qd = (payload[p + 4] << 8) | payload[p + 5];
  const an = (payload[p + 6] << 8) | payload[p + 7];
  const ns = (payload[p + 8] << 8) | payload[p + 9];
  const ar = (payload[p + 10] << 8) | payload[p + 11];
  if (qd === 0) return false;
  // Minimum sizes: a question is root name (1) + type + class; an RR is 1 + 10 bytes.
  if (DNS_HEADER_LENGTH + qd * 5 + (an + ns + ar) * 11 > length) return false;
  let pos = p + DNS_HEADER_LENGTH;
  for (let i = 0; i < qd; i++) {
    pos = skipName(payload, p, end, pos);
    if (pos < 0 || pos + 4 > end) return false;
    pos += 4;
  }
  return (an + ns + ar) * 11 <= end - pos;
}

export type DnsTcpClass = "dns" | "not_dns" | "need_more";

/** Classifies the first bytes of a TCP stream as DNS over TCP (RFC 1035 §4.2.2 length prefix). */
export function classifyDnsOverTcp(firstBytes: Uint8Array): DnsTcpClass {
  if (firstBytes.length < 2) return "need_more";
  const length = (firstBytes[0] << 8) | firstBytes[1];
  if (length < DNS_HEADER_LENGTH + 5) return "not_dns";
  const available = Math.min(length, firstBytes.length - 2);
  if (available < length) {
    // Judge the header early when we have it, so non-DNS streams are not held back.
    if (available >= 4) {
      const flags = (firstBytes[4] << 8) | firstBytes[5];
      if ((flags & 0x8000) || ((flags >> 11) & 0x0f) || (flags & 0x000f)) return "not_dns";
    }
    return "need_more";
  }
  return looksLikeDnsQuery(firstBytes, 2, length) ? "dns" : "not_dns";
}

/** True when the stream starts with a complete, length-prefixed DNS query. */
export function looksLikeDnsOverTcp(firstBytes: Uint8Array): boolean {
  return classifyDnsOverTcp(firstBytes) === "dns";
}

/** Prefixes a DNS message with its 2-byte length for TCP. */
export function frameDnsTcp(message: Uint8Array): Uint8Array {
  if (message.length > 0xffff) throw new RangeError("Cannot frame DNS message: longer than 65535 bytes");
  const out = new Uint8Array(message.length + 2);
  out[0] = message.length >> 8;
  out[1] = message.length & 0xff;
  out.set(message, 2);
  return out;
}

/**
 * Splits a DNS-over-TCP byte stream into messages. Keeps at most one partial message (≤ 64 KiB).
 */
export class DnsTcpDeframer {
  #pending: Uint8Array = new Uint8Array(0);

  /** Appends stream bytes; returns the complete messages (without prefixes) now available. */
  push(chunk: Uint8Array): Uint8Array[] {
    let data = chunk;
    if (this.#pending.length > 0) {
      data = new Uint8Array(this.#pending.length + chunk.length);
      data.set(this.#pending);
      data.set(chunk, this.#pending.length);
    }
    const messages: Uint8Array[] = [];
    let pos = 0;
    while (data.length - pos >= 2) {
      const length = (data[pos] << 8) | data[pos + 1];
      if (data.length - pos - 2 < length) break;
      messages.push(data.slice(pos + 2, pos + 2 + length));
      pos += 2 + length;
    }
    this.#pending = data.slice(pos);
    return messages;
  }

  /** Bytes of an incomplete message held back. */
  get pendingBytes(): number {
    return this.#pending.length;
  }
}

export type DnsQuestion = { name: string; type: number; class: number };

export type DnsQuestionsResult =
  | {
    kind: "ok";
    id: number;
    flags: number;
    /** QDCOUNT as sent */
    questionCount: number;
    /** decoded questions, at most MAX_QUESTIONS_REPORTED */
    questions: DnsQuestion[];
    /** offset after the last decoded question */
    end: number;
  }
  | { kind: "malformed"; reason: string };

/**
 * Reads the header and the question section. Names are lower-case without the trailing dot
 * (root is ""); bytes outside printable ASCII and `.` or `\` inside a label are escaped as `\DDD`.
 */
export function readDnsQuestions(msg: Uint8Array): DnsQuestionsResult {
  if (msg.length < DNS_HEADER_LENGTH) return { kind: "malformed", reason: "shorter than a DNS header" };
  const id = (msg[0] << 8) | msg[1];
  const flags = (msg[2] << 8) | msg[3];
  const questionCount = (msg[4] << 8) | msg[5];
  const questions: DnsQuestion[] = [];
  let pos = DNS_HEADER_LENGTH;
  const decode = Math.min(questionCount, MAX_QUESTIONS_REPORTED);
  for (let i = 0; i < decode; i++) {
    const name = readName(msg, pos);
    if (typeof name === "string") return { kind: "malformed", reason: `question ${i + 1}: ${name}` };
    pos = name.next;
    if (pos + 4 > msg.length) return { kind: "malformed", reason: `question ${i + 1}: truncated type/class` };
    questions.push({
      name: name.name,
      type: (msg[pos] << 8) | msg[pos + 1],
      class: (msg[pos + 2] << 8) | msg[pos + 3],
    });
    pos += 4;
  }
  return { kind: "ok", id, flags, questionCount, questions, end: pos };
}

function readName(msg: Uint8Array, pos: number): { name: string; next: number } | string {
  const labels: string[] = [];
  let next = -1;
  let octets = 0;
  let hops = 0;
  let floor = pos;
  for (;;) {
    if (pos >= msg.length) return "truncated name";
    const len = msg[pos];
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= msg.length) return "truncated compression pointer";
      const target = ((len & 0x3f) << 8) | msg[pos + 1];
      if (target >= floor) return "compression pointer does not point backwards";
      if (++hops > MAX_POINTER_HOPS) return "too many compression pointers";
      if (next < 0) next = pos + 2;
      pos = target;
      floor = target;
      continue;
    }
    if (kind !== 0) return "unsupported label type";
    if (pos + 1 + len > msg.length) return "truncated label";
    octets += len + 1;
    if (octets + 1 > MAX_NAME_OCTETS) return "name longer than 255 octets";
    let label = "";
    for (let i = pos + 1; i <= pos + len; i++) {
      let c = msg[i];
      if (c >= 0x41 && c <= 0x5a) c += 0x20;
      label += c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c
        ? String.fromCharCode(c)
        : "\\" + String(c).padStart(3, "0");
    }
    labels.push(label);
    pos += len + 1;
  }
  return { name: labels.join("."), next };
}
