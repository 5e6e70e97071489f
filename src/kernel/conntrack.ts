// Conntrack lookup by REPLY tuple over a raw ctnetlink socket (AF_NETLINK / NETLINK_NETFILTER).
// The proxy knows the reply direction of a REDIRECTed connection (its own local address and the
// client's post-NAT address); the kernel's entry gives the original destination and the pre-NAT
// client port. libnetfilter_conntrack cannot query by reply tuple, hence the hand-made messages.
// The socket is opened lazily in the network namespace the process runs in and kept open.

import {
  AF_NETLINK,
  EAGAIN,
  EINTR,
  ENOENT,
  errno,
  libc,
  MSG_DONTWAIT,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_RAW,
  strerror,
} from "../../ffi/libc.ts";
import {
  CT_NEW_TYPE,
  type CtEndpoints,
  type CtTuple,
  decodeConntrackEntry,
  decodeErrorCode,
  encodeGetByReply,
  NLMSG_ERROR,
  splitMessages,
} from "./ctnetlink_codec.ts";

export type { CtEndpoints, CtTuple } from "./ctnetlink_codec.ts";

const NETLINK_NETFILTER = 12;
const ENOBUFS = 105;
const RECEIVE_BUFFER_BYTES = 16384;
const DEFAULT_TIMEOUT_MS = 250;

export type ConntrackLookup =
  | { found: true; original: CtEndpoints; micros: number }
  | { found: false; reason: string; micros: number };

export type ConntrackOptions = {
  /** Upper bound for one lookup (send + wait for the answer), default 250 ms. */
  timeoutMs?: number;
};

/** One ctnetlink socket; lookups are serialized (each is answered synchronously by the kernel). */
export class ConntrackClient {
  #fd = -1;
  #seq = Math.floor(Math.random() * 0x7fffffff);
  #queue: Promise<unknown> = Promise.resolve();
  #busy = false;
  #closed = false;
  #closeWhenIdle = false;
  readonly #timeoutMs: number;
  readonly #receive = new Uint8Array(RECEIVE_BUFFER_BYTES);
  readonly #pollFd = new Uint8Array(8);

  constructor(options: ConntrackOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Looks up the entry whose reply tuple is `reply`. Never throws: failures come back as a reason. */
  lookupByReply(reply: CtTuple): Promise<ConntrackLookup> {
    const run = this.#queue.then(() => this.#lookup(reply));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Closes the socket (idempotent). A lookup in flight finishes first; later lookups fail. */
  close(): void {
    this.#closed = true;
    if (this.#busy) {
      this.#closeWhenIdle = true;
      return;
    }
    this.#closeFd();
  }

  #closeFd() {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }

  #open(): string | undefined {
    if (this.#fd >= 0) return undefined;
    const c = libc();
    const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
    if (fd < 0) return `Cannot open ctnetlink socket: ${strerror(errno())}`;
    // sockaddr_nl { sa_family_t nl_family; unsigned short nl_pad; u32 nl_pid; u32 nl_groups }
    const address = new Uint8Array(12);
    new DataView(address.buffer).setUint16(0, AF_NETLINK, true);
    if (c.bind(fd, address, address.length) < 0) {
      const code = errno();
      c.close(fd);
      return `Cannot bind ctnetlink socket: ${strerror(code)}`;
    }
    this.#fd = fd;
    const view = new DataView(this.#pollFd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
    return undefined;
  }

  async #lookup(reply: CtTuple): Promise<ConntrackLookup> {
    const started = performance.now();
    const miss = (reason: string): ConntrackLookup => ({
      found: false,
      reason,
      micros: Math.round((performance.now() - started) * 1000),
    });
    if (this.#closed) return miss("conntrack client is closed");
    this.#busy = true;
    try {
      const failure = this.#open();
      if (failure) return miss(failure);
      let request: Uint8Array<ArrayBuffer>;
      const seq = this.#seq = (this.#seq + 1) >>> 0;
      try {
        request = encodeGetByReply(reply, seq);
      } catch (error) {
        return miss((error as Error).message);
      }
      const c = libc();
      this.#drainStale();
      if (Number(c.send(this.#fd, request, BigInt(request.length), 0)) < 0) {
        return miss(`Cannot send conntrack query: ${strerror(errno())}`);
      }
      const deadline = started + this.#timeoutMs;
      for (;;) {
        const n = Number(c.recv(this.#fd, this.#receive, BigInt(this.#receive.length), MSG_DONTWAIT));
        if (n < 0) {
          const code = errno();
          if (code === EINTR) continue;
          if (code === ENOBUFS) continue; // overrun: our answer may still follow, else the deadline hits
          if (code !== EAGAIN) return miss(`Cannot receive conntrack answer: ${strerror(code)}`);
          const remaining = Math.ceil(deadline - performance.now());
          if (remaining <= 0) return miss(`conntrack answer timed out after ${this.#timeoutMs} ms`);
          const ready = await c.poll_async(this.#pollFd, 1n, remaining);
          if (ready < 0 && errno() !== EINTR) {
            return miss(`Cannot wait for conntrack answer: ${strerror(errno())}`);
          }
          continue;
        }
        for (const message of splitMessages(this.#receive.subarray(0, n))) {
          if (message.seq !== seq) continue; // answer to an earlier, timed-out query
          if (message.type === NLMSG_ERROR) {
            const code = decodeErrorCode(message.payload);
            if (code === 0) continue; // plain ACK
            if (code === ENOENT) return miss("no conntrack entry for this reply tuple");
            return miss(`conntrack query failed: ${strerror(code)}`);
          }
          if (message.type === CT_NEW_TYPE) {
            const entry = decodeConntrackEntry(message.payload);
            if (!entry) return miss("conntrack answer could not be decoded");
            const { srcIp, srcPort, dstIp, dstPort } = entry.original;
            return {
              found: true,
              original: { srcIp, srcPort, dstIp, dstPort },
              micros: Math.round((performance.now() - started) * 1000),
            };
          }
        }
      }
    } finally {
      this.#busy = false;
      if (this.#closeWhenIdle) this.#closeFd();
    }
  }

  /** Discards answers left over from queries that timed out, so the buffer holds only fresh data. */
  #drainStale() {
    const c = libc();
    for (let i = 0; i < 64; i++) {
      const n = Number(c.recv(this.#fd, this.#receive, BigInt(this.#receive.length), MSG_DONTWAIT));
      if (n < 0 && errno() !== ENOBUFS) return;
    }
  }
}

let shared: ConntrackClient | undefined;

/**
 * Original tuple (pre-NAT client address/port, original destination) of the connection whose
 * REPLY tuple is `reply` (for a REDIRECTed connection accepted by the proxy: src = the accepted
 * socket's local address, dst = its peer). Undefined when there is no entry, on timeout or on any
 * error; `onMiss` receives the reason.
 */
export async function queryOriginalByReply(
  reply: CtTuple,
  onMiss?: (reason: string) => void,
): Promise<CtEndpoints | undefined> {
  shared ??= new ConntrackClient();
  const result = await shared.lookupByReply(reply);
  if (result.found) return result.original;
  onMiss?.(result.reason);
  return undefined;
}

/** Closes the shared socket used by queryOriginalByReply (idempotent; the next query reopens). */
export function close(): void {
  shared?.close();
  shared = undefined;
}

/** Same as close(), under a name that reads well when imported beside other modules' close(). */
export const closeConntrack = close;
