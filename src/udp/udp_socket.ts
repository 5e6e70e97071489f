// IPv4 UDP socket over libc (ffi/libc.ts) for the DNS proxy. node:dgram (and Deno's own datagram
// API) completes one async op per datagram; under load the proxy then spent most of its time
// waiting between ops and topped out near 16k q/s. This socket uses the receive loop of the
// NFQUEUE consumer (docs/nfqueue.md): drain with recvfrom(MSG_DONTWAIT) until EAGAIN, handing
// each datagram to the callback synchronously, then wait in a WakeablePoll (src/udp/wakeable_poll.ts). Sends are synchronous sendto() calls on the nonblocking fd.

import { WakeablePoll } from "./wakeable_poll.ts";
import {
  AF_INET,
  closeFd,
  EAGAIN,
  EINTR,
  errno,
  libc,
  MSG_DONTWAIT,
  OsError,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOL_SOCKET,
} from "../../ffi/libc.ts";

/** Gets a copy of the datagram (free to keep) and the sender's address. */
export type DatagramHandler = (message: Uint8Array, ip: string, port: number) => void;

export type UdpSocketOptions = {
  /** SO_REUSEADDR, so a loopback and a wildcard socket can share a port */
  reuseAddr?: boolean;
  /** datagrams handled per drain before yielding to the event loop (default 256) */
  batchLimit?: number;
  /**
   * socket receive buffer (default 4 MiB; SO_RCVBUFFORCE as root, else capped by rmem_max): a burst
   * of queries arriving while the JS thread is busy must not overflow the default ~200 KiB
   */
  receiveBufferBytes?: number;
};

const MAX_DATAGRAM = 65536;
// Errors a queued ICMP message makes recvfrom report once; the socket itself is fine.
const ENETUNREACH = 101;
const ECONNREFUSED = 111;
const EHOSTUNREACH = 113;
const EMSGSIZE = 90;
const TRANSIENT = new Set([ENETUNREACH, ECONNREFUSED, EHOSTUNREACH, EMSGSIZE]);
const SOCKADDR_IN_LENGTH = 16;

function sockaddrIn(ip: string, port: number, into = new Uint8Array(SOCKADDR_IN_LENGTH)): Uint8Array {
  const octets = ip.split(".");
  if (octets.length !== 4) throw new Error(`Cannot use address ${JSON.stringify(ip)}: not IPv4`);
  into[0] = AF_INET; // sa_family is host order (little-endian on x86_64 and aarch64)
  into[1] = 0;
  into[2] = port >> 8;
  into[3] = port & 0xff;
  for (let i = 0; i < 4; i++) {
    const value = Number(octets[i]);
    if (!Number.isInteger(value) || value < 0 || value > 255) {
      throw new Error(`Cannot use address ${JSON.stringify(ip)}: not IPv4`);
    }
    into[4 + i] = value;
  }
  return into;
}

export class UdpSocket {
  readonly port: number;
  readonly hostname: string;
  /** Settles when the receive loop ends: after close(), or rejected on a fatal socket error. */
  readonly finished: Promise<void>;
  /** sends the kernel refused (full send buffer, unreachable …): UDP loss, counted */
  sendErrors = 0;
  readonly #fd: number;
  readonly #poll: WakeablePoll;
  readonly #onMessage: DatagramHandler;
  readonly #batchLimit: number;
  readonly #buffer = new Uint8Array(MAX_DATAGRAM);
  readonly #from = new Uint8Array(SOCKADDR_IN_LENGTH);
  readonly #fromLength = new Uint32Array(1);
  readonly #to = new Uint8Array(SOCKADDR_IN_LENGTH);
  #closing = false;
  #closed: Promise<void> | undefined;

  private constructor(
    fd: number,
    poll: WakeablePoll,
    hostname: string,
    port: number,
    onMessage: DatagramHandler,
    batchLimit: number,
  ) {
    this.#fd = fd;
    this.#poll = poll;
    this.hostname = hostname;
    this.port = port;
    this.#onMessage = onMessage;
    this.#batchLimit = batchLimit;
    this.finished = this.#run();
    // The owner learns of a fatal error by awaiting `finished`; never an unhandled rejection.
    this.finished.catch(() => {});
  }

  /** Binds `hostname:port` (0 = an ephemeral port the kernel picks). Throws "Cannot bind …". */
  static bind(
    hostname: string,
    port: number,
    onMessage: DatagramHandler,
    options: UdpSocketOptions = {},
  ): UdpSocket {
    const lib = libc();
    const address = sockaddrIn(hostname, port);
    const fd = lib.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new OsError("create a UDP socket", errno());
    let poll: WakeablePoll | undefined;
    try {
      if (options.reuseAddr) {
        const one = new Int32Array([1]);
        if (lib.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, new Uint8Array(one.buffer), 4) < 0) {
          throw new OsError(`set SO_REUSEADDR on UDP ${hostname}:${port}`, errno());
        }
      }
      const size = new Int32Array([options.receiveBufferBytes ?? 4 * 1024 * 1024]);
      const sizeBytes = new Uint8Array(size.buffer);
      // Best effort: without CAP_NET_ADMIN the kernel caps SO_RCVBUF at rmem_max, still fine.
      if (lib.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, sizeBytes, 4) < 0) {
        lib.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, sizeBytes, 4);
      }
      if (lib.bind(fd, address, SOCKADDR_IN_LENGTH) < 0) {
        throw new OsError(`bind UDP ${hostname}:${port}`, errno());
      }
      const bound = new Uint8Array(SOCKADDR_IN_LENGTH);
      const length = new Uint32Array([SOCKADDR_IN_LENGTH]);
      if (lib.getsockname(fd, bound, new Uint8Array(length.buffer)) < 0) {
        throw new OsError(`read the port of UDP ${hostname}:${port}`, errno());
      }
      poll = new WakeablePoll(fd, `UDP ${hostname}:${port}`);
      return new UdpSocket(
        fd,
        poll,
        hostname,
        (bound[2] << 8) | bound[3],
        onMessage,
        options.batchLimit ?? 256,
      );
    } catch (error) {
      closeFd(fd);
      poll?.close();
      throw error;
    }
  }

  /** Sends one datagram; false when the kernel refused it (counted in sendErrors). */
  send(message: Uint8Array, ip: string, port: number): boolean {
    if (this.#closing) return false;
    const address = sockaddrIn(ip, port, this.#to);
    const sent = Number(
      libc().sendto(
        this.#fd,
        message as Uint8Array<ArrayBuffer>,
        BigInt(message.length),
        0,
        address as Uint8Array<ArrayBuffer>,
        SOCKADDR_IN_LENGTH,
      ),
    );
    if (sent < 0) {
      this.sendErrors++;
      return false;
    }
    return true;
  }

  async #run(): Promise<void> {
    const lib = libc();
    const fd = this.#fd;
    const buffer = this.#buffer;
    const size = BigInt(buffer.length);
    const from = this.#from;
    const fromLength = this.#fromLength;
    const fromLengthBytes = new Uint8Array(fromLength.buffer);
    await Promise.resolve(); // let bind() return before the first callback
    while (!this.#closing) {
      let handled = 0;
      while (handled < this.#batchLimit && !this.#closing) {
        fromLength[0] = SOCKADDR_IN_LENGTH;
        const length = Number(lib.recvfrom(fd, buffer, size, MSG_DONTWAIT, from, fromLengthBytes));
        if (length < 0) {
          const code = errno();
          if (code === EAGAIN) break;
          if (code === EINTR) continue;
          if (TRANSIENT.has(code)) continue;
          throw new OsError(`receive on UDP ${this.hostname}:${this.port}`, code);
        }
        handled++;
        const ip = `${from[4]}.${from[5]}.${from[6]}.${from[7]}`;
        try {
          this.#onMessage(buffer.slice(0, length), ip, (from[2] << 8) | from[3]);
        } catch {
          // The handler owns its errors; one bad datagram must not stop the socket.
        }
      }
      if (this.#closing) break;
      // A full batch yields with a zero timeout, so a flood cannot starve the event loop.
      await this.#poll.wait(handled >= this.#batchLimit ? 0 : -1);
    }
  }

  /** Stops receiving and closes the socket. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      await this.#poll.stop(this.finished);
      closeFd(this.#fd);
      this.#poll.close();
    })();
    return this.#closed;
  }
}
