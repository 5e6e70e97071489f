// IPv4 parsing and CIDR membership (policy.md §10.1, §10.2). Pure; addresses are uint32 numbers.

/** Parses a strict dotted quad (no leading zeros, octets 0..255) into a uint32, else undefined. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (part.length === 0 || part.length > 3) return undefined;
    if (part.length > 1 && part[0] === "0") return undefined;
    let octet = 0;
    for (let i = 0; i < part.length; i++) {
      const digit = part.charCodeAt(i) - 48;
      if (digit < 0 || digit > 9) return undefined;
      octet = octet * 10 + digit;
    }
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

const MAPPED_PREFIX = "::ffff:";

/**
 * The IPv4 address of an event's `dst_ip`: a dotted quad, or an IPv4-mapped IPv6 address
 * `::ffff:a.b.c.d`. Any other IPv6 address (or garbage) yields undefined and so never matches
 * `ip`/`cidr` rules.
 */
export function eventIpv4(text: string): number | undefined {
  if (
    text.length > MAPPED_PREFIX.length && text.slice(0, MAPPED_PREFIX.length).toLowerCase() === MAPPED_PREFIX
  ) {
    return parseIpv4(text.slice(MAPPED_PREFIX.length));
  }
  return parseIpv4(text);
}

/** Formats a uint32 as a dotted quad. */
export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

export function prefixMask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

export type Cidr = { network: number; prefixLength: number; mask: number };

/** Parses `a.b.c.d/len` (host bits may be set: `10.1.2.3/8` is the network 10.0.0.0/8). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const address = parseIpv4(text.slice(0, slash));
  const lengthText = text.slice(slash + 1);
  if (address === undefined || !/^(0|[1-9][0-9]?)$/.test(lengthText)) return undefined;
  const prefixLength = Number(lengthText);
  if (prefixLength > 32) return undefined;
  const mask = prefixMask(prefixLength);
  return { network: (address & mask) >>> 0, prefixLength, mask };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return ((address & cidr.mask) >>> 0) === cidr.network;
}

/** Convenience: whether the dotted quad (or mapped IPv6) `ip` lies in the CIDR text. */
export function ipInCidr(ip: string, cidrText: string): boolean {
  const cidr = parseCidr(cidrText);
  const address = eventIpv4(ip);
  return cidr !== undefined && address !== undefined && cidrContains(cidr, address);
}
