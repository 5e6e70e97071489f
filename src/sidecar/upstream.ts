// Upstream DNS queries over a UDP socket carrying SO_MARK, so the DNS redirect and the filter
// chain let them pass (Deno cannot set socket options on its own sockets: the socket is made
// through ffi/libc.ts). The socket is connected, so only the upstream's replies are accepted.

import {
  AF_INET,
  AF_INET6,
  closeFd,
  errno,
  libc,
  MSG_DONTWAIT,
  OsError,
  POLLIN,
  SO_MARK,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOL_SOCKET,
} from "../../ffi/libc.ts";
import { parseAddress } from "./address.ts";

export type Upstream = { address: string; port: number };

/** `IP`, `IP:PORT`, `[IPv6]:PORT` or bare IPv6 → upstream (port 53 by default). */
export function parseUpstream(text: string): Upstream | undefined {
  let host = text, port = 53;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) {
    host = bracket[1];
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else if ((text.match(/:/g) ?? []).length === 1) {
    const [h, p] = text.split(":");
    host = h;
    if (!/^\d{1,5}$/.test(p)) return undefined;
    port = Number(p);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  const parsed = parseAddress(host);
  if (parsed === undefined) return undefined;
  return { address: host, port };
}

/** `nameserver` lines of resolv.conf text. */
export function resolvConfNameservers(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split("\n")) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!match) continue;
    const address = match[1].replace(/%.*$/, ""); // drop an IPv6 zone
    if (parseAddress(address) !== undefined) out.push({ address, port: 53 });
  }
  return out;
}

function sockaddr(upstream: Upstream): { family: number; bytes: Uint8Array<ArrayBuffer> } {
  const parsed = parseAddress(upstream.address);
  if (parsed === undefined) throw new Error(`Cannot use upstream ${upstream.address}: not an IP address`);
  if (parsed.family === 4) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET, true);
    view.setUint16(2, upstream.port, false);
    view.setUint32(4, Number(parsed.value), false);
    return { family: AF_INET, bytes };
  }
  const bytes = new Uint8Array(28);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, AF_INET6, true);
  view.setUint16(2, upstream.port, false);
  for (let i = 0; i < 16; i++) bytes[8 + i] = Number((parsed.value >> BigInt((15 - i) * 8)) & 0xffn);
  return { family: AF_INET6, bytes };
}

/**
 * Sends one DNS message to `upstream` from a socket marked with `mark` and waits up to
 * `timeoutMs` for the reply with the same id. Resolves undefined on timeout.
 */
export async function queryUpstream(
  upstream: Upstream,
  message: Uint8Array<ArrayBuffer>,
  mark: number,
  timeoutMs: number,
): Promise<Uint8Array | undefined> {
  const c = libc();
  const address = sockaddr(upstream);
  const fd = c.socket(address.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new OsError("create upstream DNS socket", errno());
  try {
    const markBytes = new Uint8Array(4);
    new DataView(markBytes.buffer).setUint32(0, mark, true);
    if (c.setsockopt(fd, SOL_SOCKET, SO_MARK, markBytes, 4) !== 0) {
      throw new OsError("set SO_MARK on the upstream DNS socket", errno());
    }
    if (c.connect(fd, address.bytes, address.bytes.length) !== 0) {
      throw new OsError(`connect to upstream ${upstream.address}:${upstream.port}`, errno());
    }
    if (Number(c.send(fd, message, BigInt(message.length), 0)) < 0) {
      throw new OsError(`send to upstream ${upstream.address}:${upstream.port}`, errno());
    }
    const deadline = Date.now() + timeoutMs;
    const pollfd = new Uint8Array(8);
    const pollView = new DataView(pollfd.buffer);
    const buffer = new Uint8Array(65535);
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return undefined;
      pollView.setInt32(0, fd, true);
      pollView.setInt16(4, POLLIN, true);
      pollView.setInt16(6, 0, true);
      const ready = await c.poll_async(pollfd, 1n, remaining);
      if (ready === 0) return undefined;
      const n = Number(c.recv(fd, buffer, BigInt(buffer.length), MSG_DONTWAIT));
      if (n < 0) continue; // EAGAIN, or an ICMP error (ECONNREFUSED): wait for the deadline
      if (n >= 2 && buffer[0] === message[0] && buffer[1] === message[1]) return buffer.slice(0, n);
    }
  } finally {
    closeFd(fd);
  }
}
