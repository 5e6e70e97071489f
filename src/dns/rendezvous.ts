// Rendezvous between the NFQUEUE consumer and the DNS proxy. The consumer sees a DNS query before
// NAT (original resolver, attributed process); the proxy then receives the same query REDIRECTed,
// from the client's address. The consumer records what it saw; the proxy takes it back by client
// address, client port, transaction id and question name. Pure: no Deno, no node:.
//
// Keying: the 16-bit id alone collides across clients, so the client address and port are part of
// the key, and the question name too (a stray or forged packet with the same id but another name
// cannot take a real query's entry). `scope` separates clients of this network namespace
// ("netns") from forwarded ones keyed by their source address ("source"), as attribution does.

import type { ProcessInfo } from "../proc/process_info.ts";

export type RendezvousScope = "netns" | "source";

export type RendezvousKey = {
  scope: RendezvousScope;
  clientIp: string;
  clientPort: number;
  /** DNS transaction id */
  id: number;
  /** first question's name, lower-case, no trailing dot ("" when there is none) */
  name: string;
};

export type RendezvousEntry = RendezvousKey & {
  /** the resolver the client sent the query to (before REDIRECT) */
  resolverIp: string;
  resolverPort: number;
  /** the attributed process, when attribution found one */
  process?: ProcessInfo;
  /** when recorded, in the clock's milliseconds */
  at: number;
};

export type RendezvousOptions = {
  /** entries held at most; beyond it the oldest go first (default 4096) */
  maxEntries?: number;
  /** an entry older than this is never returned (default 10 000 ms) */
  maxAgeMs?: number;
  /** milliseconds clock (default Date.now) */
  now?: () => number;
};

function keyOf(key: RendezvousKey): string {
  return `${key.scope}|${key.clientIp}|${key.clientPort}|${key.id}|${key.name}`;
}

/**
 * Bounded, aged table. Entries with the same key (the same client re-sending the same query to
 * two resolvers, or a retransmission) queue up in arrival order; `take` returns the oldest live
 * one, as the proxy receives the REDIRECTed packets in the order the consumer let them through.
 */
export class Rendezvous {
  readonly maxEntries: number;
  readonly maxAgeMs: number;
  readonly #now: () => number;
  // Map iteration order is insertion order: the first key is the oldest (for eviction).
  readonly #entries = new Map<string, RendezvousEntry[]>();
  #size = 0;

  constructor(options: RendezvousOptions = {}) {
    const maxEntries = options.maxEntries ?? 4096;
    const maxAgeMs = options.maxAgeMs ?? 10_000;
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new TypeError("Cannot create Rendezvous: maxEntries must be a positive integer");
    }
    if (!Number.isFinite(maxAgeMs) || maxAgeMs <= 0) {
      throw new TypeError("Cannot create Rendezvous: maxAgeMs must be a positive number");
    }
    this.maxEntries = maxEntries;
    this.maxAgeMs = maxAgeMs;
    this.#now = options.now ?? Date.now;
  }

  /** Entries currently held (including expired ones not yet swept). */
  get size(): number {
    return this.#size;
  }

  /** Records what the queue consumer saw of one query. */
  record(entry: Omit<RendezvousEntry, "at">): void {
    const key = keyOf(entry);
    const stored: RendezvousEntry = { ...entry, at: this.#now() };
    const list = this.#entries.get(key);
    if (list) {
      // Move the key to the young end so eviction order stays by last use.
      this.#entries.delete(key);
      list.push(stored);
      this.#entries.set(key, list);
    } else {
      this.#entries.set(key, [stored]);
    }
    this.#size++;
    this.#evict();
  }

  /** Removes and returns the oldest live entry for the key, or undefined. */
  take(key: RendezvousKey): RendezvousEntry | undefined {
    const name = keyOf(key);
    const list = this.#entries.get(name);
    if (!list) return undefined;
    const oldest = this.#now() - this.maxAgeMs;
    let found: RendezvousEntry | undefined;
    while (list.length > 0 && found === undefined) {
      const entry = list.shift()!;
      this.#size--;
      if (entry.at >= oldest) found = entry;
    }
    if (list.length === 0) this.#entries.delete(name);
    return found;
  }

  /** Returns the oldest live entry for the key without removing it. */
  peek(key: RendezvousKey): RendezvousEntry | undefined {
    const list = this.#entries.get(keyOf(key));
    const oldest = this.#now() - this.maxAgeMs;
    return list?.find((entry) => entry.at >= oldest);
  }

  /** Drops expired entries (record() also evicts when full; call this from a timer if wanted). */
  sweep(): number {
    const oldest = this.#now() - this.maxAgeMs;
    let removed = 0;
    for (const [key, list] of this.#entries) {
      const live = list.filter((entry) => entry.at >= oldest);
      removed += list.length - live.length;
      if (live.length === 0) this.#entries.delete(key);
      else if (live.length !== list.length) this.#entries.set(key, live);
    }
    this.#size -= removed;
    return removed;
  }

  clear(): void {
    this.#entries.clear();
    this.#size = 0;
  }

  #evict(): void {
    if (this.#size <= this.maxEntries) return;
    this.sweep();
    while (this.#size > this.maxEntries) {
      const first = this.#entries.entries().next();
      if (first.done) break;
      const [key, list] = first.value;
      list.shift();
      this.#size--;
      if (list.length === 0) this.#entries.delete(key);
    }
  }
}
