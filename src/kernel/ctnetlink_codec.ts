// Pure encoder/decoder for the ctnetlink messages egress needs: IPCTNL_MSG_CT_GET by reply tuple
// and the IPCTNL_MSG_CT_NEW answer (or NLMSG_ERROR). No Deno API, no node: module.
// Layouts follow <linux/netlink.h>, <linux/netfilter/nfnetlink.h> and
// <linux/netfilter/nfnetlink_conntrack.h>; netlink headers are in host byte order (little-endian on
// the platforms egress supports), attribute payloads for addresses and ports are big-endian.

export type CtProtocol = "tcp" | "udp";

/** A connection tuple as conntrack stores it (one direction). */
export type CtTuple = {
  protocol: CtProtocol;
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
};

export type CtEndpoints = Omit<CtTuple, "protocol">;

const NLMSG_HDRLEN = 16;
const NFGENMSG_LEN = 4;
const NLA_HDRLEN = 4;
const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
const NLM_F_REQUEST = 0x1;

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_NEW = 0;
const IPCTNL_MSG_CT_GET = 1;
export const CT_GET_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
export const CT_NEW_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;

const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

function align4(n: number): number {
  return (n + 3) & ~3;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses dotted IPv4; undefined when malformed. */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return undefined;
    const value = Number(parts[i]);
    if (value > 255) return undefined;
    out[i] = value;
  }
  return out;
}

/** Parses IPv6 text (with `::` and an optional trailing dotted IPv4); undefined when malformed. */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.includes("%")) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const toGroups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const groups: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (!v4) return undefined;
        groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        groups.push(parseInt(piece, 16));
      }
    }
    return groups;
  };
  const head = toGroups(halves[0]);
  const tail = halves.length === 2 ? toGroups(halves[1]) : [];
  if (!head || !tail) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/** `::ffff:1.2.3.4` ⇒ `1.2.3.4`; anything else unchanged. */
export function unmapIpv4(text: string): string {
  const match = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(text);
  return match ? match[1] : text;
}

export function formatIpv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/** RFC 5952 text form (lower case, longest zero run compressed). */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[i * 2] << 8) | bytes[i * 2 + 1]);
  let bestStart = -1, bestLength = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLength).join(":");
  return `${left}::${right}`;
}

// ---------------------------------------------------------------------------------------------
// Encoder

class Writer {
  private bytes = new Uint8Array(128);
  private view = new DataView(this.bytes.buffer);
  length = 0;

  private ensure(extra: number) {
    if (this.length + extra <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + extra));
    grown.set(this.bytes);
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }
  u8(v: number) {
    this.ensure(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  u16le(v: number) {
    this.ensure(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  u16be(v: number) {
    this.ensure(2);
    this.view.setUint16(this.length, v, false);
    this.length += 2;
  }
  u32le(v: number) {
    this.ensure(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  raw(b: Uint8Array) {
    this.ensure(b.length);
    this.bytes.set(b, this.length);
    this.length += b.length;
  }
  pad() {
    while (this.length % 4 !== 0) this.u8(0);
  }
  patchU16le(at: number, v: number) {
    this.view.setUint16(at, v, true);
  }
  patchU32le(at: number, v: number) {
    this.view.setUint32(at, v, true);
  }
  /** Writes an attribute header, runs `body`, then fixes the length (payload unpadded) and pads. */
  attr(type: number, body: () => void) {
    const start = this.length;
    this.u16le(0);
    this.u16le(type);
    body();
    this.patchU16le(start, this.length - start);
    this.pad();
  }
  result(): Uint8Array<ArrayBuffer> {
    return this.bytes.slice(0, this.length);
  }
}

function protocolNumber(protocol: CtProtocol): number {
  return protocol === "tcp" ? IPPROTO_TCP : IPPROTO_UDP;
}

function checkPort(port: number, name: string) {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`Cannot encode conntrack query: ${name} ${port} is not a port number`);
  }
}

/**
 * Encodes IPCTNL_MSG_CT_GET asking for the entry whose REPLY tuple is `reply`.
 * Throws "Cannot encode conntrack query: …" for addresses or ports that do not parse, or mixed families.
 */
export function encodeGetByReply(reply: CtTuple, seq: number): Uint8Array<ArrayBuffer> {
  checkPort(reply.srcPort, "source port");
  checkPort(reply.dstPort, "destination port");
  if (reply.protocol !== "tcp" && reply.protocol !== "udp") {
    throw new Error(`Cannot encode conntrack query: protocol ${String(reply.protocol)} is not tcp or udp`);
  }
  // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; conntrack keeps them as IPv4.
  const src4 = parseIpv4(unmapIpv4(reply.srcIp)), dst4 = parseIpv4(unmapIpv4(reply.dstIp));
  let family: number, src: Uint8Array, dst: Uint8Array;
  if (src4 && dst4) {
    family = AF_INET;
    src = src4;
    dst = dst4;
  } else {
    const src6 = parseIpv6(reply.srcIp), dst6 = parseIpv6(reply.dstIp);
    if (!src6 || !dst6) {
      throw new Error(
        `Cannot encode conntrack query: ${reply.srcIp} and ${reply.dstIp} are not two IPv4 or two IPv6 addresses`,
      );
    }
    family = AF_INET6;
    src = src6;
    dst = dst6;
  }
  const w = new Writer();
  w.u32le(0); // nlmsg_len, patched below
  w.u16le(CT_GET_TYPE);
  w.u16le(NLM_F_REQUEST);
  w.u32le(seq >>> 0);
  w.u32le(0); // portid: the kernel fills in ours
  w.u8(family);
  w.u8(0); // NFNETLINK_V0
  w.u16be(0); // res_id
  w.attr(CTA_TUPLE_REPLY | NLA_F_NESTED, () => {
    w.attr(CTA_TUPLE_IP | NLA_F_NESTED, () => {
      w.attr(family === AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, () => w.raw(src));
      w.attr(family === AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST, () => w.raw(dst));
    });
    w.attr(CTA_TUPLE_PROTO | NLA_F_NESTED, () => {
      w.attr(CTA_PROTO_NUM, () => w.u8(protocolNumber(reply.protocol)));
      w.attr(CTA_PROTO_SRC_PORT, () => w.u16be(reply.srcPort));
      w.attr(CTA_PROTO_DST_PORT, () => w.u16be(reply.dstPort));
    });
  });
  w.patchU32le(0, w.length);
  return w.result();
}

// ---------------------------------------------------------------------------------------------
// Decoder

export type NetlinkMessage = {
  type: number;
  flags: number;
  seq: number;
  portid: number;
  payload: Uint8Array;
};

/** Splits a datagram into netlink messages; stops at a truncated or malformed header. */
export function splitMessages(data: Uint8Array): NetlinkMessage[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: NetlinkMessage[] = [];
  let offset = 0;
  while (offset + NLMSG_HDRLEN <= data.length) {
    const length = view.getUint32(offset, true);
    if (length < NLMSG_HDRLEN || offset + length > data.length) break;
    out.push({
      type: view.getUint16(offset + 4, true),
      flags: view.getUint16(offset + 6, true),
      seq: view.getUint32(offset + 8, true),
      portid: view.getUint32(offset + 12, true),
      payload: data.subarray(offset + NLMSG_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  return out;
}

/** errno carried by an NLMSG_ERROR payload (positive; 0 = ACK). */
export function decodeErrorCode(payload: Uint8Array): number {
  if (payload.length < 4) return -1;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return -view.getInt32(0, true);
}

type Attrs = Map<number, Uint8Array>;

function parseAttrs(data: Uint8Array): Attrs {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const attrs: Attrs = new Map();
  let offset = 0;
  while (offset + NLA_HDRLEN <= data.length) {
    const length = view.getUint16(offset, true);
    const type = view.getUint16(offset + 2, true) & NLA_TYPE_MASK;
    if (length < NLA_HDRLEN || offset + length > data.length) break;
    if (!attrs.has(type)) attrs.set(type, data.subarray(offset + NLA_HDRLEN, offset + length));
    offset += align4(length);
  }
  return attrs;
}

function decodeTuple(data: Uint8Array): CtTuple | undefined {
  const tuple = parseAttrs(data);
  const ip = tuple.get(CTA_TUPLE_IP), proto = tuple.get(CTA_TUPLE_PROTO);
  if (!ip || !proto) return undefined;
  const ips = parseAttrs(ip);
  let srcIp: string, dstIp: string;
  const s4 = ips.get(CTA_IP_V4_SRC), d4 = ips.get(CTA_IP_V4_DST);
  const s6 = ips.get(CTA_IP_V6_SRC), d6 = ips.get(CTA_IP_V6_DST);
  if (s4?.length === 4 && d4?.length === 4) {
    srcIp = formatIpv4(s4);
    dstIp = formatIpv4(d4);
  } else if (s6?.length === 16 && d6?.length === 16) {
    srcIp = formatIpv6(s6);
    dstIp = formatIpv6(d6);
  } else {
    return undefined;
  }
  const protos = parseAttrs(proto);
  const num = protos.get(CTA_PROTO_NUM),
    sp = protos.get(CTA_PROTO_SRC_PORT),
    dp = protos.get(CTA_PROTO_DST_PORT);
  if (num?.length !== 1 || sp?.length !== 2 || dp?.length !== 2) return undefined;
  if (num[0] !== IPPROTO_TCP && num[0] !== IPPROTO_UDP) return undefined;
  return {
    protocol: num[0] === IPPROTO_TCP ? "tcp" : "udp",
    srcIp,
    srcPort: (sp[0] << 8) | sp[1],
    dstIp,
    dstPort: (dp[0] << 8) | dp[1],
  };
}

export type CtEntry = { original: CtTuple; reply: CtTuple };

/** Decodes the payload of an IPCTNL_MSG_CT_NEW message (nfgenmsg + attributes). */
export function decodeConntrackEntry(payload: Uint8Array): CtEntry | undefined {
  if (payload.length < NFGENMSG_LEN) return undefined;
  const attrs = parseAttrs(payload.subarray(NFGENMSG_LEN));
  const orig = attrs.get(CTA_TUPLE_ORIG), reply = attrs.get(CTA_TUPLE_REPLY);
  if (!orig || !reply) return undefined;
  const original = decodeTuple(orig), replyTuple = decodeTuple(reply);
  if (!original || !replyTuple) return undefined;
  return { original, reply: replyTuple };
}

/** Builds a CT_NEW message as the kernel would send it; used by tests of the decoder. */
export function encodeEntryForTest(entry: CtEntry, seq: number): Uint8Array<ArrayBuffer> {
  const w = new Writer();
  const v4 = parseIpv4(entry.original.srcIp) !== undefined;
  w.u32le(0);
  w.u16le(CT_NEW_TYPE);
  w.u16le(0);
  w.u32le(seq >>> 0);
  w.u32le(0);
  w.u8(v4 ? AF_INET : AF_INET6);
  w.u8(0);
  w.u16be(0);
  const tuple = (type: number, t: CtTuple) =>
    w.attr(type | NLA_F_NESTED, () => {
      w.attr(CTA_TUPLE_IP | NLA_F_NESTED, () => {
        const parse = v4 ? parseIpv4 : parseIpv6;
        w.attr(v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, () => w.raw(parse(t.srcIp)!));
        w.attr(v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, () => w.raw(parse(t.dstIp)!));
      });
      w.attr(CTA_TUPLE_PROTO | NLA_F_NESTED, () => {
        w.attr(CTA_PROTO_NUM, () => w.u8(protocolNumber(t.protocol)));
        w.attr(CTA_PROTO_SRC_PORT, () => w.u16be(t.srcPort));
        w.attr(CTA_PROTO_DST_PORT, () => w.u16be(t.dstPort));
      });
    });
  tuple(CTA_TUPLE_ORIG, entry.original);
  tuple(CTA_TUPLE_REPLY, entry.reply);
  w.patchU32le(0, w.length);
  return w.result();
}
