// NFQUEUE consumer: receives queued packets from one queue, asks `onPacket` for a verdict and sends
// it back. Fail closed throughout: a handler exception, an invalid verdict, a packet the kernel could
// not deliver (ENOBUFS) and a closed consumer all end in a dropped packet (the iptables rule is
// installed without --queue-bypass, so nothing passes while no consumer is bound).
//
// Receive loop (measured fastest in Deno, see docs/nfqueue.md): drain the socket with synchronous
// recv(MSG_DONTWAIT) until EAGAIN, handing each message to nfq_handle_packet (which runs the
// callback synchronously), then await a poll() that runs on a worker thread. An eventfd in the same
// poll set lets close() wake the loop at once.

import {
  NF_ACCEPT,
  NF_DROP,
  NF_REPEAT,
  NFQ_MAX_COPY_RANGE,
  NFQA_CFG_F_FAIL_OPEN,
  NfqHandle,
  NFQNL_COPY_PACKET,
  type NfqPacketInfo,
  type NfqQueue,
  type NfVerdict,
} from "../../ffi/libnetfilter_queue.ts";
import { EAGAIN, EINTR, ENOBUFS, errno, libc, MSG_DONTWAIT, OsError } from "../../ffi/libc.ts";
import { WakeablePoll } from "./wakeable_poll.ts";

/** What onPacket returns. `mark` (uint32) replaces the packet's mark; absent keeps it. */
export type NfqueueVerdict = { verdict: "accept" | "drop" | "repeat"; mark?: number };

/** Shared verdict objects, so a handler need not allocate one per packet. */
export const ACCEPT: NfqueueVerdict = Object.freeze({ verdict: "accept" });
export const DROP: NfqueueVerdict = Object.freeze({ verdict: "drop" });

/**
 * The packet handed to onPacket. The same object is reused for every packet and its bytes live in
 * the consumer's receive buffer: both are only valid during the onPacket call (copy what you keep).
 */
export interface QueuedPacket {
  /** kernel packet id (host order) */
  readonly id: number;
  /** the packet's netfilter mark when it was queued */
  readonly mark: number;
  /** netfilter hook (3 = LOCAL_OUT, 0 = PRE_ROUTING, …) */
  readonly hook: number;
  /** ethertype from the packet header (0x0800 for IPv4) */
  readonly hwProtocol: number;
  readonly inputInterface: number;
  readonly outputInterface: number;
  /** the packet from its IP header on, at most copyRange bytes; a view, no copy */
  readonly payload: Uint8Array;
  /** allocation-free access: payload = bytes[payloadOffset, payloadOffset + payloadLength) */
  readonly bytes: Uint8Array;
  readonly payloadOffset: number;
  readonly payloadLength: number;
}

export type NfqueueOptions = {
  /** 0..65535; must match the rule's --queue-num */
  queueNum: number;
  /** bytes of each packet copied to us, 1..65535 (default 65535) */
  copyRange?: number;
  onPacket: (packet: QueuedPacket) => NfqueueVerdict;
  /**
   * packets the kernel holds while we are busy before it drops new ones (default 16384): a burst
   * of new flows from many sockets has no send-buffer backpressure, so this must hold the burst
   */
  maxQueueLength?: number;
  /** netlink socket receive buffer (default 8 MiB); too small ⇒ ENOBUFS ⇒ dropped packets */
  receiveBufferBytes?: number;
  /** messages handled per drain before yielding to the event loop (default 1024) */
  batchLimit?: number;
};

export type NfqueueCounters = {
  /** packet messages seen (each one gets a verdict unless it had no packet header) */
  received: number;
  accepted: number;
  dropped: number;
  repeated: number;
  /** times the kernel reported ENOBUFS: packets it could not queue to us, and so dropped */
  enobufs: number;
  /** onPacket threw or returned an invalid verdict (the packet was dropped) */
  handlerErrors: number;
  /** a verdict message could not be sent */
  verdictErrors: number;
  /** the kernel answered a verdict with an error (unknown packet id) */
  verdictRejected: number;
  /** messages without a usable packet header, or that libnetfilter_queue could not parse */
  malformed: number;
};

const DEFAULT_MAX_QUEUE_LENGTH = 16384;
const DEFAULT_RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024;
const DEFAULT_BATCH_LIMIT = 1024;
// Netlink and nfqueue attribute headers around the copied bytes fit comfortably in 8 KiB.
const MESSAGE_OVERHEAD_BYTES = 8192;
// Netlink headers are in host byte order.
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLMSG_MIN_TYPE = 0x10;

function checkInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`Cannot open nfqueue: ${name} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

class PacketView implements QueuedPacket {
  #info: NfqPacketInfo;
  #payload: Uint8Array | undefined;

  constructor(info: NfqPacketInfo) {
    this.#info = info;
  }

  reset(info: NfqPacketInfo): void {
    this.#info = info;
    this.#payload = undefined;
  }

  get id(): number {
    return this.#info.id;
  }
  get mark(): number {
    return this.#info.mark;
  }
  get hook(): number {
    return this.#info.hook;
  }
  get hwProtocol(): number {
    return this.#info.hwProtocol;
  }
  get inputInterface(): number {
    return this.#info.inputInterface;
  }
  get outputInterface(): number {
    return this.#info.outputInterface;
  }
  get bytes(): Uint8Array {
    return this.#info.payloadBuffer;
  }
  get payloadOffset(): number {
    return this.#info.payloadOffset;
  }
  get payloadLength(): number {
    return this.#info.payloadLength;
  }
  get payload(): Uint8Array {
    // Created on first use only: a handler that reads bytes/payloadOffset allocates nothing.
    this.#payload ??= this.#info.payloadBuffer.subarray(
      this.#info.payloadOffset,
      this.#info.payloadOffset + this.#info.payloadLength,
    );
    return this.#payload;
  }
}

/** A bound NFQUEUE with its receive loop. Create with NfqueueConsumer.open(). */
export class NfqueueConsumer {
  readonly queueNum: number;
  readonly counters: NfqueueCounters = {
    received: 0,
    accepted: 0,
    dropped: 0,
    repeated: 0,
    enobufs: 0,
    handlerErrors: 0,
    verdictErrors: 0,
    verdictRejected: 0,
    malformed: 0,
  };
  /** Settles when the receive loop ends: resolves after close(), rejects on a fatal socket error. */
  readonly finished: Promise<void>;

  readonly #handle: NfqHandle;
  readonly #queue: NfqQueue;
  readonly #onPacket: (packet: QueuedPacket) => NfqueueVerdict;
  readonly #buffer: Uint8Array<ArrayBuffer>;
  readonly #bufferView: DataView;
  readonly #batchLimit: number;
  readonly #poll: WakeablePoll;
  #view: PacketView | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  private constructor(
    queueNum: number,
    handle: NfqHandle,
    onPacket: (packet: QueuedPacket) => NfqueueVerdict,
    bufferBytes: number,
    batchLimit: number,
    poll: WakeablePoll,
    bind: (consumer: NfqueueConsumer) => NfqQueue,
  ) {
    this.queueNum = queueNum;
    this.#handle = handle;
    this.#onPacket = onPacket;
    this.#buffer = new Uint8Array(bufferBytes);
    this.#bufferView = new DataView(this.#buffer.buffer);
    this.#batchLimit = batchLimit;
    this.#poll = poll;
    this.#queue = bind(this);
    this.finished = this.#run();
    // Handled here so a fatal error is never an unhandled rejection that kills the process; the
    // owner learns of it by awaiting `finished` (the queue then drops everything until close()).
    this.finished.catch(() => {});
  }

  /** Binds the queue and starts receiving. Throws "Cannot …" errors (EPERM without root, EBUSY …). */
  static open(options: NfqueueOptions): NfqueueConsumer {
    if (typeof options?.onPacket !== "function") {
      throw new TypeError("Cannot open nfqueue: onPacket must be a function");
    }
    const queueNum = checkInteger("queueNum", options.queueNum, 0, 0xffff);
    const copyRange = checkInteger(
      "copyRange",
      options.copyRange ?? NFQ_MAX_COPY_RANGE,
      1,
      NFQ_MAX_COPY_RANGE,
    );
    const maxQueueLength = checkInteger(
      "maxQueueLength",
      options.maxQueueLength ?? DEFAULT_MAX_QUEUE_LENGTH,
      1,
      0xffff_ffff,
    );
    const receiveBufferBytes = checkInteger(
      "receiveBufferBytes",
      options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES,
      4096,
      0x7fff_ffff,
    );
    const batchLimit = checkInteger("batchLimit", options.batchLimit ?? DEFAULT_BATCH_LIMIT, 1, 1 << 20);

    const handle = NfqHandle.open();
    let poll: WakeablePoll | undefined;
    try {
      poll = new WakeablePoll(handle.fd, `nfqueue ${queueNum}`);
      handle.setReceiveBufferSize(receiveBufferBytes);
      return new NfqueueConsumer(
        queueNum,
        handle,
        options.onPacket,
        copyRange + MESSAGE_OVERHEAD_BYTES,
        batchLimit,
        poll,
        (consumer) => {
          const queue = handle.createQueue(queueNum, (info) => consumer.#handlePacket(info));
          queue.setMode(NFQNL_COPY_PACKET, copyRange);
          queue.setMaxLength(maxQueueLength);
          // Explicitly off: with fail-open the kernel would accept packets when our queue is full.
          queue.setFlags(NFQA_CFG_F_FAIL_OPEN, 0);
          return queue;
        },
      );
    } catch (error) {
      handle.close();
      poll?.close();
      throw error;
    }
  }

  get closed(): boolean {
    return this.#closing;
  }

  /**
   * Runs raw netlink bytes through the same path as received messages (for tests of malformed
   * input); its outcome shows in the counters.
   */
  processMessage(message: Uint8Array): void {
    if (this.#closing) throw new Error(`Cannot process a message: nfqueue ${this.queueNum} is closed`);
    const length = Math.min(message.length, this.#buffer.length);
    this.#buffer.set(message.subarray(0, length));
    this.#dispatch(length);
  }

  /** Handles the netlink messages in buffer[0, length): packets, and errors the kernel sent back. */
  #dispatch(length: number): void {
    const view = this.#bufferView;
    const counters = this.counters;
    let offset = 0;
    while (length - offset >= NLMSG_HDRLEN) {
      const messageLength = view.getUint32(offset, HOST_LITTLE_ENDIAN);
      if (messageLength < NLMSG_HDRLEN || messageLength > length - offset) {
        counters.malformed++;
        return;
      }
      const type = view.getUint16(offset + 4, HOST_LITTLE_ENDIAN);
      if (type === NLMSG_ERROR) {
        // Verdicts ask for no ack, so an error message means the kernel refused one (ENOENT for an
        // unknown packet id: the symptom of a byte-swapped id).
        if (
          messageLength >= NLMSG_HDRLEN + 4 && view.getInt32(offset + NLMSG_HDRLEN, HOST_LITTLE_ENDIAN) < 0
        ) {
          counters.verdictRejected++;
        }
      } else if (type >= NLMSG_MIN_TYPE) {
        if (this.#handle.handleMessages(this.#buffer, offset, messageLength) < 0) counters.malformed++;
      }
      offset += (messageLength + 3) & ~3;
    }
    if (offset < length) counters.malformed++;
  }

  #handlePacket(info: NfqPacketInfo): void {
    const counters = this.counters;
    counters.received++;
    if (!info.hasHeader) {
      counters.malformed++;
      return;
    }
    let verdict: NfVerdict = NF_DROP;
    let mark: number | undefined;
    try {
      if (this.#view) this.#view.reset(info);
      else this.#view = new PacketView(info);
      const result = this.#onPacket(this.#view);
      const kind = result?.verdict;
      mark = result?.mark;
      if (mark !== undefined && !(Number.isInteger(mark) && mark >= 0 && mark <= 0xffff_ffff)) {
        throw new RangeError(`invalid mark ${mark}`);
      }
      if (kind === "accept") verdict = NF_ACCEPT;
      else if (kind === "repeat") verdict = NF_REPEAT;
      else if (kind !== "drop") throw new RangeError(`invalid verdict ${kind}`);
    } catch {
      counters.handlerErrors++;
      verdict = NF_DROP;
      mark = undefined;
    }
    if (!this.#queue.setVerdict(info.id, verdict, mark)) counters.verdictErrors++;
    if (verdict === NF_ACCEPT) counters.accepted++;
    else if (verdict === NF_REPEAT) counters.repeated++;
    else counters.dropped++;
  }

  async #run(): Promise<void> {
    const lib = libc();
    const fd = this.#handle.fd;
    const buffer = this.#buffer;
    const size = BigInt(buffer.length);
    // Let open() return (and its caller store the consumer) before the first callback can run.
    await Promise.resolve();
    while (!this.#closing) {
      let handled = 0;
      while (handled < this.#batchLimit && !this.#closing) {
        const length = Number(lib.recv(fd, buffer, size, MSG_DONTWAIT));
        if (length < 0) {
          const code = errno();
          if (code === EAGAIN) break;
          if (code === EINTR) continue;
          if (code === ENOBUFS) {
            // The kernel could not queue packets to us and dropped them (no bypass): count, go on.
            this.counters.enobufs++;
            continue;
          }
          throw new OsError(`receive from nfqueue ${this.queueNum}`, code);
        }
        if (length === 0) break;
        handled++;
        this.#dispatch(length);
      }
      if (this.#closing) break;
      // A full batch yields with a zero timeout, so a flood cannot starve the event loop.
      await this.#poll.wait(handled >= this.#batchLimit ? 0 : -1);
    }
  }

  /** Stops the loop, destroys the queue and closes the socket. Idempotent; later packets are dropped. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      await this.#poll.stop(this.finished);
      this.#queue.close();
      this.#handle.close();
      this.#poll.close();
    })();
    return this.#closed;
  }
}

/** One line of /proc/net/netfilter/nfnetlink_queue (the kernel's view of a bound queue). */
export type NfqueueKernelStats = {
  queueNum: number;
  portId: number;
  /** packets waiting for a verdict right now */
  waiting: number;
  copyMode: number;
  copyRange: number;
  /** dropped because the queue was full */
  queueDropped: number;
  /** dropped because the netlink send to us failed (our ENOBUFS) */
  userDropped: number;
  /** last packet id handed out */
  idSequence: number;
};

/** Parses /proc/net/netfilter/nfnetlink_queue text; lines that do not fit are skipped. */
export function parseNfqueueStats(text: string): NfqueueKernelStats[] {
  const stats: NfqueueKernelStats[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length < 8 || fields.some((field) => !Number.isInteger(field))) continue;
    const [queueNum, portId, waiting, copyMode, copyRange, queueDropped, userDropped, idSequence] = fields;
    stats.push({ queueNum, portId, waiting, copyMode, copyRange, queueDropped, userDropped, idSequence });
  }
  return stats;
}

/** The kernel's stats for `queueNum` in this network namespace, or undefined when nobody binds it. */
export function readNfqueueStats(queueNum: number): NfqueueKernelStats | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/net/netfilter/nfnetlink_queue");
  } catch {
    return undefined;
  }
  return parseNfqueueStats(text).find((entry) => entry.queueNum === queueNum);
}
