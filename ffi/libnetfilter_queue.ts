// Raw libnetfilter_queue bindings (Deno.dlopen of libnetfilter_queue.so.1, Debian 12's 1.0.5 ABI).
// Only symbol tables and thin typed wrappers live here: no policy and no receive loop (that is
// src/udp/nfqueue.ts). Pointers stay in private fields and never leave ffi/: packet attributes are
// handed out as numbers plus an offset/length into a caller-visible Uint8Array. Every handle has an
// idempotent close(). The library is opened lazily on first use.
//
// Byte order: struct nfqnl_msg_packet_hdr carries packet_id big-endian, and
// Deno.UnsafePointerView.getUint32 reads host order, so the id is read with DataView(…, false).
// A wrong id is not an error for the kernel: it silently ignores the verdict and the packet stays
// queued, so this matters.

import { errno, libc, OsError, SO_RCVBUF, SO_RCVBUFFORCE, SOL_SOCKET } from "./libc.ts";

const LIBNFQ_PATH = "libnetfilter_queue.so.1";

const symbols = {
  nfq_open: { parameters: [], result: "pointer" },
  nfq_close: { parameters: ["pointer"], result: "i32" },
  nfq_bind_pf: { parameters: ["pointer", "u16"], result: "i32" },
  nfq_unbind_pf: { parameters: ["pointer", "u16"], result: "i32" },
  nfq_fd: { parameters: ["pointer"], result: "i32" },
  nfq_create_queue: { parameters: ["pointer", "u16", "function", "pointer"], result: "pointer" },
  nfq_destroy_queue: { parameters: ["pointer"], result: "i32" },
  nfq_set_mode: { parameters: ["pointer", "u8", "u32"], result: "i32" },
  nfq_set_queue_maxlen: { parameters: ["pointer", "u32"], result: "i32" },
  nfq_set_queue_flags: { parameters: ["pointer", "u32", "u32"], result: "i32" },
  // Runs the queue callback synchronously, on this thread, once per message in the buffer.
  nfq_handle_packet: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  nfq_get_msg_packet_hdr: { parameters: ["pointer"], result: "pointer" },
  nfq_get_payload: { parameters: ["pointer", "buffer"], result: "i32" },
  nfq_get_nfmark: { parameters: ["pointer"], result: "u32" },
  nfq_get_indev: { parameters: ["pointer"], result: "u32" },
  nfq_get_outdev: { parameters: ["pointer"], result: "u32" },
  nfq_set_verdict: { parameters: ["pointer", "u32", "u32", "u32", "pointer"], result: "i32" },
  nfq_set_verdict2: { parameters: ["pointer", "u32", "u32", "u32", "u32", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libnfq = Deno.DynamicLibrary<typeof symbols>["symbols"];

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** Opens libnetfilter_queue once; the error names the Debian package that provides it. */
function nfq(): Libnfq {
  if (!library) {
    try {
      library = Deno.dlopen(LIBNFQ_PATH, symbols);
    } catch (error) {
      throw new Error(
        `Cannot load ${LIBNFQ_PATH} (install the Debian package libnetfilter-queue1): ${
          (error as Error).message
        }`,
      );
    }
  }
  return library.symbols;
}

/** True when libnetfilter_queue.so.1 can be opened (for feature checks; never throws). */
export function libnetfilterQueueAvailable(): boolean {
  try {
    nfq();
    return true;
  } catch {
    return false;
  }
}

// Verdicts (linux/netfilter.h).
export const NF_DROP = 0;
export const NF_ACCEPT = 1;
export const NF_REPEAT = 4;
export type NfVerdict = typeof NF_DROP | typeof NF_ACCEPT | typeof NF_REPEAT;

// Copy modes (linux/netfilter/nfnetlink_queue.h).
export const NFQNL_COPY_NONE = 0;
export const NFQNL_COPY_META = 1;
export const NFQNL_COPY_PACKET = 2;
/** The kernel caps the copy range at 0xffff bytes. */
export const NFQ_MAX_COPY_RANGE = 0xffff;

// Queue flags (NFQA_CFG_F_*).
export const NFQA_CFG_F_FAIL_OPEN = 1;

const AF_INET = 2;

const callbackDefinition = {
  parameters: ["pointer", "pointer", "pointer", "pointer"],
  result: "i32",
} as const;

function address(pointer: Deno.PointerValue): number {
  return pointer === null ? 0 : Number(Deno.UnsafePointer.value(pointer));
}

// Set by NfqPacketInfo's static block: lets NfqHandle attach the nfq_data without exposing it.
let attachPacketData: (info: NfqPacketInfo, nfa: Deno.PointerValue) => void;
let detachPacketData: (info: NfqPacketInfo) => void;

/**
 * One queued packet's attributes, refilled in place for every packet (never allocate per packet).
 * `payloadBuffer.subarray(payloadOffset, payloadOffset + payloadLength)` is the packet starting at
 * its IP header, truncated to the copy range. It is only valid during the handler call.
 */
export class NfqPacketInfo {
  /** false when the message had no packet header: no id, so no verdict can be given */
  hasHeader = false;
  /** packet id in host order, ready for setVerdict */
  id = 0;
  /** hw_protocol (ethertype, e.g. 0x0800 for IPv4) */
  hwProtocol = 0;
  /** netfilter hook number (NF_INET_LOCAL_OUT = 3, …) */
  hook = 0;
  payloadBuffer: Uint8Array = new Uint8Array(0);
  payloadOffset = 0;
  /** 0 when the message carried no payload */
  payloadLength = 0;
  // The nfq_data of the packet being handled (null outside the callback). mark and the interfaces
  // are fetched from it on first read only: three FFI calls are ~10% of the per-packet cost.
  #nfa: Deno.PointerValue = null;
  #mark = -1;
  #inputInterface = -1;
  #outputInterface = -1;

  static {
    attachPacketData = (info, nfa) => {
      info.#nfa = nfa;
      info.#mark = -1;
      info.#inputInterface = -1;
      info.#outputInterface = -1;
    };
    // Values already read stay readable; the pointer does not outlive the callback.
    detachPacketData = (info) => info.#nfa = null;
  }

  /** the packet's mark when it was queued (0 if read after the handler returned without reading it) */
  get mark(): number {
    if (this.#mark < 0) this.#mark = this.#nfa === null ? 0 : nfq().nfq_get_nfmark(this.#nfa);
    return this.#mark;
  }
  /** input interface index (0: none) */
  get inputInterface(): number {
    if (this.#inputInterface < 0) {
      this.#inputInterface = this.#nfa === null ? 0 : nfq().nfq_get_indev(this.#nfa);
    }
    return this.#inputInterface;
  }
  /** output interface index (0: none) */
  get outputInterface(): number {
    if (this.#outputInterface < 0) {
      this.#outputInterface = this.#nfa === null ? 0 : nfq().nfq_get_outdev(this.#nfa);
    }
    return this.#outputInterface;
  }
}

export type NfqPacketHandler = (packet: NfqPacketInfo) => void;

/** An nfq_open() handle: one netlink socket. */
export class NfqHandle {
  #pointer: Deno.PointerValue;
  readonly #queues = new Set<NfqQueue>();
  // The buffer being handled right now, so attribute pointers can become offsets into it.
  #buffer: Uint8Array = new Uint8Array(0);
  #bufferLength = 0;
  #bufferAddress = 0;
  #bufferPointer: Deno.PointerValue = null;
  #bufferView: DataView = new DataView(new ArrayBuffer(0));
  #lastBuffer: Uint8Array | undefined;
  // Out-parameter of nfq_get_payload (unsigned char **); read as two host-order words.
  readonly #payloadOut = new Uint8Array(8);
  readonly #payloadOutWords = new Uint32Array(this.#payloadOut.buffer);
  // Holds a payload that lies outside the handled buffer (not expected; copied as a fallback).
  readonly #scratch = new Uint8Array(NFQ_MAX_COPY_RANGE + 1);

  private constructor(pointer: Deno.PointerObject) {
    this.#pointer = pointer;
  }

  /** nfq_open() + nfq_bind_pf(AF_INET). Binding is a no-op on kernels ≥ 3.8, so its result is ignored. */
  static open(): NfqHandle {
    const pointer = nfq().nfq_open();
    if (pointer === null) throw new OsError("open an nfnetlink_queue socket (nfq_open)", errno());
    const handle = new NfqHandle(pointer);
    nfq().nfq_bind_pf(pointer, AF_INET);
    return handle;
  }

  #live(what: string): Deno.PointerObject {
    if (this.#pointer === null) throw new Error(`Cannot ${what}: the nfqueue handle is closed`);
    return this.#pointer;
  }

  get closed(): boolean {
    return this.#pointer === null;
  }

  /** The netlink socket's fd (owned by the handle: closed by close()). */
  get fd(): number {
    return nfq().nfq_fd(this.#live("get the nfqueue socket"));
  }

  /** Sets the socket receive buffer (SO_RCVBUFFORCE as root, else SO_RCVBUF capped by rmem_max). */
  setReceiveBufferSize(bytes: number): void {
    const value = new Uint8Array(4);
    new DataView(value.buffer).setInt32(0, bytes, true);
    const fd = this.fd;
    if (libc().setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, value, 4) === 0) return;
    if (libc().setsockopt(fd, SOL_SOCKET, SO_RCVBUF, value, 4) !== 0) {
      throw new OsError(`set the nfqueue receive buffer to ${bytes} bytes`, errno());
    }
  }

  /** nfq_create_queue: binds queue `queueNum` (EBUSY when another socket holds it). */
  createQueue(queueNum: number, handler: NfqPacketHandler): NfqQueue {
    const pointer = this.#live(`bind nfqueue ${queueNum}`);
    const info = new NfqPacketInfo();
    const callback = new Deno.UnsafeCallback(callbackDefinition, (_qh, _nfmsg, nfa) => {
      try {
        this.#fill(info, nfa);
        handler(info);
      } catch {
        // An exception must not unwind through C; the handler above us counts its own errors.
      }
      detachPacketData(info);
      return 0;
    });
    const queuePointer = nfq().nfq_create_queue(pointer, queueNum, callback.pointer, null);
    if (queuePointer === null) {
      const code = errno();
      callback.close();
      throw new OsError(`bind nfqueue ${queueNum}`, code);
    }
    const queue = new NfqQueue(this, queueNum, queuePointer, callback, () => this.#queues.delete(queue));
    this.#queues.add(queue);
    return queue;
  }

  /**
   * Runs nfq_handle_packet over `buffer[offset, offset + length)`: the handler of the addressed queue
   * runs once per packet message, synchronously, before this returns. Returns the library's result
   * (< 0: parse or callback failure, or a netlink error message).
   */
  handleMessages(buffer: Uint8Array, offset: number, length: number): number {
    const pointer = this.#live("handle nfqueue messages");
    if (!(offset >= 0 && length >= 0 && offset + length <= buffer.length)) {
      throw new RangeError(`Cannot handle nfqueue messages: ${offset}+${length} outside the buffer`);
    }
    if (buffer !== this.#lastBuffer) {
      // The buffer must stay alive and unmoved while it is in use: the caller keeps one for good.
      this.#lastBuffer = buffer;
      this.#bufferPointer = Deno.UnsafePointer.of(buffer as Uint8Array<ArrayBuffer>);
      this.#bufferAddress = address(this.#bufferPointer);
      this.#bufferView = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    }
    if (this.#bufferPointer === null) return -1;
    this.#buffer = buffer;
    this.#bufferLength = offset + length;
    const start = offset === 0 ? this.#bufferPointer : Deno.UnsafePointer.offset(this.#bufferPointer, offset);
    return nfq().nfq_handle_packet(pointer, start, length);
  }

  #fill(info: NfqPacketInfo, nfa: Deno.PointerValue): void {
    info.hasHeader = false;
    info.id = 0;
    info.hwProtocol = 0;
    info.hook = 0;
    info.payloadBuffer = this.#buffer;
    info.payloadOffset = 0;
    info.payloadLength = 0;
    attachPacketData(info, nfa);
    if (nfa === null) return;
    const lib = nfq();

    // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; } (packed)
    const header = lib.nfq_get_msg_packet_hdr(nfa);
    if (header !== null) {
      const offset = address(header) - this.#bufferAddress;
      if (offset >= 0 && offset + 7 <= this.#bufferLength) {
        info.id = this.#bufferView.getUint32(offset, false);
        info.hwProtocol = this.#bufferView.getUint16(offset + 4, false);
        info.hook = this.#bufferView.getUint8(offset + 6);
      } else {
        const view = new Deno.UnsafePointerView(header);
        info.id = ((view.getUint8(0) << 24) | (view.getUint8(1) << 16) | (view.getUint8(2) << 8) |
          view.getUint8(3)) >>> 0;
        info.hwProtocol = (view.getUint8(4) << 8) | view.getUint8(5);
        info.hook = view.getUint8(6);
      }
      info.hasHeader = true;
    }

    const length = lib.nfq_get_payload(nfa, this.#payloadOut);
    if (length <= 0) return;
    // Little-endian hosts only (x86_64, aarch64): low word first.
    const payloadAddress = this.#payloadOutWords[0] + this.#payloadOutWords[1] * 0x1_0000_0000;
    const offset = payloadAddress - this.#bufferAddress;
    if (offset >= 0 && offset + length <= this.#bufferLength) {
      info.payloadOffset = offset;
      info.payloadLength = length;
    } else if (payloadAddress !== 0) {
      const copied = Math.min(length, this.#scratch.length);
      const source = Deno.UnsafePointer.create(BigInt(payloadAddress));
      if (source === null) return;
      Deno.UnsafePointerView.copyInto(source, this.#scratch.subarray(0, copied));
      info.payloadBuffer = this.#scratch;
      info.payloadLength = copied;
    }
  }

  /** Destroys every queue still bound, then nfq_close() (closes the socket). Idempotent. */
  close(): void {
    if (this.#pointer === null) return;
    for (const queue of [...this.#queues]) queue.close();
    const pointer = this.#pointer;
    this.#pointer = null;
    nfq().nfq_close(pointer);
  }
}

/** A bound queue (nfq_q_handle) with its callback. */
export class NfqQueue {
  #pointer: Deno.PointerValue;
  #callback: Deno.UnsafeCallback<typeof callbackDefinition> | undefined;
  readonly #onClose: () => void;

  /** @internal created by NfqHandle.createQueue */
  constructor(
    readonly handle: NfqHandle,
    readonly queueNum: number,
    pointer: Deno.PointerObject,
    callback: Deno.UnsafeCallback<typeof callbackDefinition>,
    onClose: () => void,
  ) {
    this.#pointer = pointer;
    this.#callback = callback;
    this.#onClose = onClose;
  }

  #live(what: string): Deno.PointerObject {
    if (this.#pointer === null || this.handle.closed) {
      throw new Error(`Cannot ${what}: nfqueue ${this.queueNum} is closed`);
    }
    return this.#pointer;
  }

  get closed(): boolean {
    return this.#pointer === null;
  }

  /** nfq_set_mode: NFQNL_COPY_PACKET with `copyRange` bytes (1..0xffff), or META / NONE. */
  setMode(mode: number, copyRange: number): void {
    if (nfq().nfq_set_mode(this.#live("set the nfqueue copy mode"), mode, copyRange) < 0) {
      throw new OsError(`set the copy mode of nfqueue ${this.queueNum}`, errno());
    }
  }

  /** nfq_set_queue_maxlen: packets the kernel holds for us before it drops new ones. */
  setMaxLength(packets: number): void {
    if (nfq().nfq_set_queue_maxlen(this.#live("set the nfqueue length"), packets) < 0) {
      throw new OsError(`set the length of nfqueue ${this.queueNum}`, errno());
    }
  }

  /** nfq_set_queue_flags(mask, flags). */
  setFlags(mask: number, flags: number): void {
    if (nfq().nfq_set_queue_flags(this.#live("set the nfqueue flags"), mask, flags) < 0) {
      throw new OsError(`set the flags of nfqueue ${this.queueNum}`, errno());
    }
  }

  /**
   * Sends a verdict for packet `id` (host order). With `mark` the packet's mark is replaced
   * (nfq_set_verdict2), else it is kept. Returns false when the message could not be sent.
   */
  setVerdict(id: number, verdict: NfVerdict, mark?: number): boolean {
    const pointer = this.#live("send an nfqueue verdict");
    const result = mark === undefined
      ? nfq().nfq_set_verdict(pointer, id, verdict, 0, null)
      : nfq().nfq_set_verdict2(pointer, id, verdict, mark >>> 0, 0, null);
    return result >= 0;
  }

  /** nfq_destroy_queue (unbinds the queue number) and releases the callback. Idempotent. */
  close(): void {
    if (this.#pointer === null) return;
    const pointer = this.#pointer;
    this.#pointer = null;
    if (!this.handle.closed) nfq().nfq_destroy_queue(pointer);
    this.#callback?.close();
    this.#callback = undefined;
    this.#onClose();
  }
}
