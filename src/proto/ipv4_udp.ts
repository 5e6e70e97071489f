// IPv4 + UDP header parsing for packets as NFQUEUE delivers them (starting at the IP header).
// Pure: no Deno, no node:. The hot-path variant writes into a caller-owned result object and
// allocates nothing; addresses stay uint32 numbers until someone asks for a string.

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/**
 * Outcome of a parse:
 * - "udp": IPv4 + UDP header valid; payload fields set.
 * - "fragment": a non-first fragment; IP fields set, no UDP header in it.
 * - "not_udp": valid IPv4 of another protocol; IP fields set.
 * - "malformed": see `error`.
 */
export type Ipv4UdpStatus = "udp" | "fragment" | "not_udp" | "malformed";

export type Ipv4UdpInfo = {
  status: Ipv4UdpStatus;
  /** constant string naming the problem when status is "malformed", else "" */
  error: string;
  version: number;
  /** header length in 32-bit words */
  ihl: number;
  headerLength: number;
  totalLength: number;
  identification: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** fragment offset in bytes */
  fragmentOffset: number;
  /** true for any fragment (first or later) */
  isFragment: boolean;
  /** false for a non-first fragment: such a packet carries no UDP header */
  hasUdpHeader: boolean;
  ttl: number;
  protocol: number;
  /** addresses as unsigned 32-bit numbers in host order (a.b.c.d → a<<24 | …) */
  srcAddr: number;
  dstAddr: number;
  srcPort: number;
  dstPort: number;
  /** UDP length field (header + payload) */
  udpLength: number;
  udpChecksum: number;
  /** offset of the UDP payload from the start of the buffer given */
  payloadOffset: number;
  /** payload bytes present in this packet (first fragment: only the part it carries) */
  payloadLength: number;
};

/** A fresh result object to reuse across calls of parseIpv4UdpInto. */
export function newIpv4UdpInfo(): Ipv4UdpInfo {
  return {
    status: "malformed",
    error: "",
    version: 0,
    ihl: 0,
    headerLength: 0,
    totalLength: 0,
    identification: 0,
    dontFragment: false,
    moreFragments: false,
    fragmentOffset: 0,
    isFragment: false,
    hasUdpHeader: false,
    ttl: 0,
    protocol: 0,
    srcAddr: 0,
    dstAddr: 0,
    srcPort: 0,
    dstPort: 0,
    udpLength: 0,
    udpChecksum: 0,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

function fail(out: Ipv4UdpInfo, error: string): Ipv4UdpStatus {
  out.status = "malformed";
  out.error = error;
  return "malformed";
}

/**
 * Parses `packet[offset .. offset+length)` into `out` (no allocation). Returns `out.status`.
 * Every field not established by the parse is reset to 0/false.
 */
export function parseIpv4UdpInto(
  packet: Uint8Array,
  out: Ipv4UdpInfo,
  offset = 0,
  length = packet.length - offset,
): Ipv4UdpStatus {
  out.error = "";
  out.version =
    out.ihl =
    out.headerLength =
    out.totalLength =
    out.identification =
      0;
  out.fragmentOffset =
    out.ttl =
    out.protocol =
    out.srcAddr =
    out.dstAddr =
      0;
  out.srcPort =
    out.dstPort =
    out.udpLength =
    out.udpChecksum =
    out.payloadOffset =
    out.payloadLength =
      0;
  out.dontFragment =
    out.moreFragments =
    out.isFragment =
    out.hasUdpHeader =
      false;
  if (offset < 0 || length < 0 || offset + length > packet.length) return fail(out, "bad buffer range");
  if (length < 20) return fail(out, "shorter than an IPv4 header");
  const p = offset;
  const b0 = packet[p];
  out.version = b0 >> 4;
  if (out.version !== 4) return fail(out, "not IPv4");
  out.ihl = b0 & 0x0f;
  if (out.ihl < 5) return fail(out, "IHL below 5");
  out.headerLength = out.ihl * 4;
  if (out.headerLength > length) return fail(out, "truncated IPv4 options");
  out.totalLength = (packet[p + 2] << 8) | packet[p + 3];
  if (out.totalLength < out.headerLength) return fail(out, "total length below header length");
  // NFQUEUE may hand over a packet copied only in part; without the whole packet we cannot judge it.
  if (out.totalLength > length) return fail(out, "truncated packet");
  out.identification = (packet[p + 4] << 8) | packet[p + 5];
  const flagsFragment = (packet[p + 6] << 8) | packet[p + 7];
  if (flagsFragment & 0x8000) return fail(out, "reserved flag set");
  out.dontFragment = (flagsFragment & 0x4000) !== 0;
  out.moreFragments = (flagsFragment & 0x2000) !== 0;
  out.fragmentOffset = (flagsFragment & 0x1fff) * 8;
  out.isFragment = out.moreFragments || out.fragmentOffset !== 0;
  out.ttl = packet[p + 8];
  out.protocol = packet[p + 9];
  out.srcAddr = ((packet[p + 12] << 24) | (packet[p + 13] << 16) | (packet[p + 14] << 8) | packet[p + 15]) >>>
    0;
  out.dstAddr = ((packet[p + 16] << 24) | (packet[p + 17] << 16) | (packet[p + 18] << 8) | packet[p + 19]) >>>
    0;

  if (out.fragmentOffset !== 0) {
    out.status = "fragment";
    return "fragment";
  }
  if (out.protocol !== IPPROTO_UDP) {
    out.status = "not_udp";
    return "not_udp";
  }
  const u = p + out.headerLength;
  const ipPayload = out.totalLength - out.headerLength;
  if (ipPayload < 8) return fail(out, "truncated UDP header");
  out.hasUdpHeader = true;
  out.srcPort = (packet[u] << 8) | packet[u + 1];
  out.dstPort = (packet[u + 2] << 8) | packet[u + 3];
  out.udpLength = (packet[u + 4] << 8) | packet[u + 5];
  out.udpChecksum = (packet[u + 6] << 8) | packet[u + 7];
  if (out.udpLength < 8) return fail(out, "UDP length below 8");
  out.payloadOffset = u + 8;
  if (out.moreFragments) {
    // First fragment: the datagram continues in later fragments.
    if (out.udpLength < ipPayload) return fail(out, "UDP length below the fragment's payload");
    out.payloadLength = ipPayload - 8;
  } else {
    if (out.udpLength > ipPayload) return fail(out, "UDP length beyond the IP packet");
    out.payloadLength = out.udpLength - 8;
  }
  out.status = "udp";
  return "udp";
}

/** Allocating convenience variant. */
export function parseIpv4Udp(packet: Uint8Array, offset = 0, length = packet.length - offset): Ipv4UdpInfo {
  const out = newIpv4UdpInfo();
  parseIpv4UdpInto(packet, out, offset, length);
  return out;
}

/** Checks the IPv4 header checksum (a ones'-complement sum over the header that must be 0xffff). */
export function ipv4HeaderChecksumOk(packet: Uint8Array, offset = 0): boolean {
  if (offset + 20 > packet.length) return false;
  const headerLength = (packet[offset] & 0x0f) * 4;
  if (headerLength < 20 || offset + headerLength > packet.length) return false;
  let sum = 0;
  for (let i = offset; i < offset + headerLength; i += 2) sum += (packet[i] << 8) | packet[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

/** Dotted-quad text of a uint32 address (allocates: for logs, not the hot path). */
export function ipv4ToString(address: number): string {
  return `${address >>> 24}.${(address >>> 16) & 0xff}.${(address >>> 8) & 0xff}.${address & 0xff}`;
}

/** uint32 of a dotted quad, or undefined when it is not one. */
export function ipv4FromString(text: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  let value = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255 || (m[i].length > 1 && m[i][0] === "0")) return undefined;
    value = value * 256 + octet;
  }
  return value;
}
