// Upstream side of the DNS proxy over UDP: a few long-lived sockets instead of one socket per query
// (creating, binding and closing a socket per query capped the proxy at about 8k q/s).
//
// A shared socket must not accept an answer meant for another query, nor a forged or late one, so
// every query gets an id of its own on its socket (random, unused there) and an answer counts only
// if it comes from the resolver asked (address and port), carries that id, has QR set and repeats
// the query's single question (name, type, class). Anything else is ignored and the query keeps
// waiting for the real answer until its deadline. The client's id is put back before the answer
// is relayed. A socket's port stays fixed while it is used, which an off-path spoofer could learn;
// rotating each socket after `rotateAfter` queries keeps the port guessable only for a short time
// (the 16-bit random id and the question still have to match).

import { UdpSocket } from "../udp/udp_socket.ts";
import { readDnsQuestions } from "../proto/dns_detect.ts";

export type UpstreamTarget = { ip: string; port: number };
/** The one question an answer must repeat (name lower-case, as readDnsQuestions gives it). */
export type ExpectedQuestion = { name: string; type: number; class: number };

export type UdpUpstreamPoolOptions = {
  /** sockets used in turn (default 4) */
  sockets?: number;
  /** queries waiting on one socket at most (default 1024 of the 65,536 ids) */
  maxPendingPerSocket?: number;
  /** queries sent from one socket before it is replaced by a new one on a new port (default 2048) */
  rotateAfter?: number;
};

/** Answers ignored because they matched no waiting query (counters for status and tests). */
export type UpstreamPoolStats = {
  sent: number;
  answered: number;
  timedOut: number;
  /** no waiting query with that id on that socket (late, or guessed) */
  unknownId: number;
  /** right id, but another source address/port, not a response, or another question */
  mismatched: number;
  rotations: number;
};

type Pending = {
  clientId: number;
  target: UpstreamTarget;
  question: ExpectedQuestion;
  resolve: (answer: Uint8Array) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
};

type Slot = {
  socket: UdpSocket;
  pending: Map<number, Pending>;
  sent: number;
  retired: boolean;
};

function positiveInteger(name: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`Cannot create the DNS upstream pool: ${name} must be an integer in 1..${max}`);
  }
  return value;
}

export class UdpUpstreamPool {
  readonly stats: UpstreamPoolStats = {
    sent: 0,
    answered: 0,
    timedOut: 0,
    unknownId: 0,
    mismatched: 0,
    rotations: 0,
  };
  readonly #maxPending: number;
  readonly #rotateAfter: number;
  readonly #slots: Slot[] = [];
  /** retired sockets still waiting for answers; closed when their last query settles */
  readonly #draining = new Set<Slot>();
  // Random ids drawn in batches: one getRandomValues call per 256 queries.
  readonly #random = new Uint16Array(256);
  #randomLeft = 0;
  #next = 0;
  #closed = false;

  constructor(options: UdpUpstreamPoolOptions = {}) {
    const sockets = positiveInteger("sockets", options.sockets ?? 4, 64);
    this.#maxPending = positiveInteger("maxPendingPerSocket", options.maxPendingPerSocket ?? 1024, 32768);
    this.#rotateAfter = positiveInteger("rotateAfter", options.rotateAfter ?? 2048, 1 << 30);
    for (let i = 0; i < sockets; i++) this.#slots.push(this.#newSlot());
  }

  /** Queries waiting for an answer, on all sockets. */
  get pending(): number {
    let count = 0;
    for (const slot of this.#slots) count += slot.pending.size;
    for (const slot of this.#draining) count += slot.pending.size;
    return count;
  }

  /** Local ports of the sockets in use (tests: rotation changes them). */
  ports(): number[] {
    return this.#slots.map((slot) => slot.socket.port);
  }

  /**
   * Sends `query` (not modified: a copy carries the pool's id) to `target`; resolves with the
   * matching answer, its id set back to the query's. Rejects after `timeoutMs`, when every socket
   * is full, on a send error, and on close().
   */
  async query(
    query: Uint8Array,
    question: ExpectedQuestion,
    target: UpstreamTarget,
    timeoutMs: number,
  ): Promise<Uint8Array> {
    if (this.#closed) throw new Error("the DNS upstream pool is closed");
    if (query.length < 12) throw new Error("query shorter than a DNS header");
    const slot = this.#pickSlot();
    if (!slot) {
      throw new Error(`too many upstream queries waiting (${this.#maxPending * this.#slots.length})`);
    }
    const id = this.#freeId(slot);
    const outgoing = new Uint8Array(query);
    outgoing[0] = id >> 8;
    outgoing[1] = id & 0xff;
    slot.sent++;
    this.stats.sent++;
    const answer = new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (slot.pending.get(id)?.timer !== timer) return;
        this.stats.timedOut++;
        this.#settle(slot, id);
        reject(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      slot.pending.set(id, {
        clientId: (query[0] << 8) | query[1],
        target,
        question,
        resolve,
        reject,
        timer,
      });
    });
    if (slot.sent >= this.#rotateAfter) this.#retire(slot);
    if (!slot.socket.send(outgoing, target.ip, target.port)) {
      const waiting = slot.pending.get(id)!;
      clearTimeout(waiting.timer);
      this.#settle(slot, id);
      waiting.reject(new Error(`cannot send to ${target.ip}:${target.port}`));
    }
    return await answer;
  }

  /** Closes every socket; waiting queries are rejected. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    const slots = [...this.#slots, ...this.#draining];
    this.#slots.length = 0;
    this.#draining.clear();
    return Promise.all(slots.map((slot) => {
      for (const waiting of slot.pending.values()) {
        clearTimeout(waiting.timer);
        waiting.reject(new Error("the DNS upstream pool is closed"));
      }
      slot.pending.clear();
      return closeSocket(slot);
    })).then(() => {});
  }

  #newSlot(): Slot {
    const slot = { pending: new Map(), sent: 0, retired: false } as Omit<Slot, "socket"> as Slot;
    // An ephemeral port the kernel picks at random (net.ipv4.ip_local_port_range).
    slot.socket = UdpSocket.bind(
      "0.0.0.0",
      0,
      (message, ip, port) => this.#onAnswer(slot, message, ip, port),
    );
    return slot;
  }

  /** Round-robin over the sockets, skipping full ones. */
  #pickSlot(): Slot | undefined {
    for (let tried = 0; tried < this.#slots.length; tried++) {
      const slot = this.#slots[this.#next];
      this.#next = (this.#next + 1) % this.#slots.length;
      if (slot.pending.size < this.#maxPending) return slot;
    }
    return undefined;
  }

  /** A random id no query on this socket is waiting with (at most 1/2 of the ids are ever taken). */
  #freeId(slot: Slot): number {
    for (;;) {
      if (this.#randomLeft === 0) {
        crypto.getRandomValues(this.#random);
        this.#randomLeft = this.#random.length;
      }
      const id = this.#random[--this.#randomLeft];
      if (!slot.pending.has(id)) return id;
    }
  }

  /** Replaces a socket that sent `rotateAfter` queries; it is closed once its queries settle. */
  #retire(slot: Slot): void {
    const index = this.#slots.indexOf(slot);
    if (index < 0 || this.#closed) return;
    slot.retired = true;
    this.stats.rotations++;
    this.#slots[index] = this.#newSlot();
    if (slot.pending.size === 0) closeSocket(slot);
    else this.#draining.add(slot);
  }

  #settle(slot: Slot, id: number): void {
    slot.pending.delete(id);
    if (slot.retired && slot.pending.size === 0 && this.#draining.delete(slot)) closeSocket(slot);
  }

  #onAnswer(slot: Slot, message: Uint8Array, ip: string, port: number): void {
    if (message.length < 12) {
      this.stats.unknownId++;
      return;
    }
    const id = (message[0] << 8) | message[1];
    const waiting = slot.pending.get(id);
    if (!waiting) {
      this.stats.unknownId++;
      return;
    }
    if (
      port !== waiting.target.port || ip !== waiting.target.ip ||
      !(message[2] & 0x80) || !sameQuestion(message, waiting.question)
    ) {
      // Not the answer: the query keeps waiting for the real one.
      this.stats.mismatched++;
      return;
    }
    clearTimeout(waiting.timer);
    this.#settle(slot, id);
    this.stats.answered++;
    const answer = message; // already a copy of the receive buffer
    answer[0] = waiting.clientId >> 8;
    answer[1] = waiting.clientId & 0xff;
    waiting.resolve(answer);
  }
}

/** Whether a DNS message carries exactly the one expected question. */
export function sameQuestion(message: Uint8Array, expected: ExpectedQuestion): boolean {
  const read = readDnsQuestions(message);
  if (read.kind !== "ok" || read.questionCount !== 1) return false;
  const question = read.questions[0];
  return question.name === expected.name && question.type === expected.type &&
    question.class === expected.class;
}

function closeSocket(slot: Slot): Promise<void> {
  return slot.socket.close();
}
