// Upstream DNS queries over a UDP socket carrying SO_MARK, so the DNS redirect and the filter
// chain let them pass (Deno cannot set socket options on its own sockets: the socket is made
// through ffi/libc.ts). The socket is connected, so only the upstream's address can answer; the
// app shares the namespace, sees the socket in /proc/net/udp and chose the query, so the query
// goes out under a random id of ours and a reply must also repeat the question.

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
import { readDnsQuestions } from "../proto/dns_detect.ts";
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

/** A copy of a DNS message with another id. */
export function withId(message: Uint8Array, id: number): Uint8Array<ArrayBuffer> {
  const copy = new Uint8Array(message);
  copy[0] = id >> 8;
  copy[1] = id & 0xff;
  return copy;
}

/** True when `reply` is a response with the id and the questions (names case-insensitive) of `query`. */
export function answersQuery(query: Uint8Array, reply: Uint8Array): boolean {
  const sent = readDnsQuestions(query);
  const got = readDnsQuestions(reply);
  if (sent.kind !== "ok" || got.kind !== "ok") return false;
  if (got.id !== sent.id || (got.flags & 0x8000) === 0 || got.questionCount !== sent.questionCount) {
    return false;
  }
  return sent.questions.every((q, i) => {
    const r = got.questions[i];
    return r !== undefined && r.type === q.type && r.class === q.class &&
      r.name.toLowerCase() === q.name.toLowerCase();
  });
}

/**
 * Sends one DNS message to `upstream` from a socket marked with `mark` (under a random id) and
 * waits up to `timeoutMs` for its reply, returned with the caller's id. Undefined on timeout.
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
    const sent = withId(message, crypto.getRandomValues(new Uint16Array(1))[0]);
    if (Number(c.send(fd, sent, BigInt(sent.length), 0)) < 0) {
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
      const reply = buffer.subarray(0, n);
      if (answersQuery(sent, reply)) return withId(reply, (message[0] << 8) | message[1]);
    }
  } finally {
    closeFd(fd);
  }
}
