// IPv4/IPv6 addresses and CIDRs as numeric ranges, for the nftables interval sets. Pure.
// IPv4 parsing is the policy library's; IPv6 (which the policy language does not accept, but
// sidecar JSON targets do) is parsed here.

import { formatIpv4, parseCidr, parseIpv4 } from "../policy/ipv4.ts";

export type Family = 4 | 6;
/** Inclusive range of addresses of one family. */
export type AddressRange = { family: Family; first: bigint; last: bigint };

/** Parses an IPv6 address (RFC 4291 text forms, incl. `::` and a trailing dotted quad). */
export function parseIpv6(text: string): bigint | undefined {
  if (text.length === 0 || text.length > 45 || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];
  if (head === undefined || tail === undefined) return undefined;
  if (halves.length === 2 && halves[1].includes(".") && halves[0].includes(".")) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  let value = 0n;
  for (const group of groups) value = (value << 16n) | BigInt(group);
  return value;
}

/** Canonical RFC 5952 text of an IPv6 address. */
export function formatIpv6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1, bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** Address or CIDR text (`1.2.3.4`, `10.0.0.0/8`, `2001:db8::1`, `2001:db8::/32`) as a range. */
export function parseAddressTarget(text: string): AddressRange | undefined {
  const slash = text.indexOf("/");
  if (text.includes(":")) {
    const address = parseIpv6(slash < 0 ? text : text.slice(0, slash));
    if (address === undefined) return undefined;
    let length = 128;
    if (slash >= 0) {
      const lengthText = text.slice(slash + 1);
      if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > 128) return undefined;
      length = Number(lengthText);
    }
    const hostBits = BigInt(128 - length);
    const first = (address >> hostBits) << hostBits;
    return { family: 6, first, last: first + (1n << hostBits) - 1n };
  }
  if (slash < 0) {
    const address = parseIpv4(text);
    return address === undefined ? undefined : { family: 4, first: BigInt(address), last: BigInt(address) };
  }
  const cidr = parseCidr(text);
  if (cidr === undefined) return undefined;
  const first = BigInt(cidr.network);
  return { family: 4, first, last: first + (1n << BigInt(32 - cidr.prefixLength)) - 1n };
}

/** Parses a bare address of either family (no prefix), e.g. a DNS answer. */
export function parseAddress(text: string): { family: Family; value: bigint } | undefined {
  if (text.includes("/")) return undefined;
  const range = parseAddressTarget(text);
  return range === undefined ? undefined : { family: range.family, value: range.first };
}

export function formatAddress(family: Family, value: bigint): string {
  return family === 4 ? formatIpv4(Number(value)) : formatIpv6(value);
}

/** Sorted, non-overlapping, non-adjacent union of ranges of one family (nft rejects overlaps). */
export function mergeRanges(ranges: readonly AddressRange[]): AddressRange[] {
  const sorted = [...ranges].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const merged: AddressRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && range.first <= last.last + 1n) {
      if (range.last > last.last) last.last = range.last;
    } else {
      merged.push({ ...range });
    }
  }
  return merged;
}

/** nft element text of a range: `a` or `a-b`. */
export function formatRange(range: AddressRange): string {
  const first = formatAddress(range.family, range.first);
  return range.first === range.last ? first : `${first}-${formatAddress(range.family, range.last)}`;
}
