// IP → names cache filled from allowed DNS responses (policy.md §11, §13). Pure; `now` is injectable.
import { normalizeHostname } from "./hostname.ts";
import { eventIpv4, formatIpv4 } from "./ipv4.ts";

type Entry = { ip: string; name: string; expiresAt: number; sequence: number };

export type DnsCacheOptions = {
  capacity?: number;
  minTtl?: number;
  maxTtl?: number;
  now?: () => number;
};

function positiveInteger(value: unknown, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`Cannot create DnsCache: ${what} must be a non-negative finite number`);
  }
  return value;
}

/** IPv4-mapped addresses are stored as their dotted quad; other text is lower-cased. */
function normalizeIp(ip: string): string {
  const v4 = eventIpv4(ip);
  return v4 !== undefined ? formatIpv4(v4) : ip.toLowerCase();
}

/**
 * Each IP keeps every name that resolved to it within that pair's lifetime. Per IP, a Map in
 * insertion order doubles as the recency list (re-adding deletes and re-inserts). A min-heap on
 * (expiresAt, sequence) finds the eviction victim: expired entries always sort before live ones, so
 * "expired first, then soonest-expiring" is a single pop. Heap nodes of refreshed or removed entries
 * are stale and skipped (detected by identity).
 */
export class DnsCache {
  readonly #capacity: number;
  readonly #minTtl: number;
  readonly #maxTtl: number;
  readonly #now: () => number;
  readonly #byIp = new Map<string, Map<string, Entry>>();
  #count = 0;
  #sequence = 0;
  #heap: Entry[] = [];

  constructor(options: DnsCacheOptions = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("Cannot create DnsCache: options must be an object");
    }
    this.#capacity = Math.floor(positiveInteger(options.capacity, "capacity", 10000));
    this.#minTtl = positiveInteger(options.minTtl, "minTtl", 60);
    this.#maxTtl = positiveInteger(options.maxTtl, "maxTtl", 300);
    if (this.#maxTtl < this.#minTtl) throw new TypeError("Cannot create DnsCache: maxTtl is below minTtl");
    if (options.now !== undefined && typeof options.now !== "function") {
      throw new TypeError("Cannot create DnsCache: now must be a function");
    }
    this.#now = options.now ?? Date.now;
  }

  /** Maps every IP to `name` for the TTL clamped to [minTtl, maxTtl] seconds. */
  add(name: string, ips: string[], ttlSeconds: number): void {
    const normalizedName = normalizeHostname(name);
    if (normalizedName === "" || this.#capacity === 0) return;
    const ttl = Number.isFinite(ttlSeconds)
      ? Math.min(this.#maxTtl, Math.max(this.#minTtl, ttlSeconds))
      : this.#minTtl;
    const now = this.#now();
    const expiresAt = now + ttl * 1000;
    for (const rawIp of ips) {
      const ip = normalizeIp(rawIp);
      let names = this.#byIp.get(ip);
      const existing = names?.get(normalizedName);
      if (names && existing) {
        names.delete(normalizedName);
      } else {
        if (this.#count >= this.#capacity) this.#evictOne();
        this.#count++;
        names = this.#byIp.get(ip); // eviction may have removed the IP's map
        if (!names) {
          names = new Map();
          this.#byIp.set(ip, names);
        }
      }
      const entry: Entry = { ip, name: normalizedName, expiresAt, sequence: this.#sequence++ };
      names.set(normalizedName, entry);
      this.#heapPush(entry);
    }
    this.#compactHeapIfStale();
  }

  /** The most recently added live name for the IP. */
  lookup(ip: string): string | undefined {
    return this.lookupAll(ip)[0];
  }

  /** All live names for the IP, most recent first. */
  lookupAll(ip: string): string[] {
    const key = normalizeIp(ip);
    const names = this.#byIp.get(key);
    if (!names) return [];
    const now = this.#now();
    const live: string[] = [];
    for (const entry of [...names.values()]) {
      if (entry.expiresAt > now) live.push(entry.name);
      else this.#remove(entry);
    }
    return live.reverse();
  }

  /** Number of live (IP, name) entries. */
  get size(): number {
    const now = this.#now();
    while (this.#heap.length > 0) {
      const top = this.#heap[0];
      if (!this.#isCurrent(top)) {
        this.#heapPop();
      } else if (top.expiresAt <= now) {
        this.#heapPop();
        this.#remove(top);
      } else {
        break;
      }
    }
    return this.#count;
  }

  #isCurrent(entry: Entry): boolean {
    return this.#byIp.get(entry.ip)?.get(entry.name) === entry;
  }

  #remove(entry: Entry): void {
    const names = this.#byIp.get(entry.ip);
    if (!names || names.get(entry.name) !== entry) return;
    names.delete(entry.name);
    if (names.size === 0) this.#byIp.delete(entry.ip);
    this.#count--;
  }

  #evictOne(): void {
    while (this.#heap.length > 0) {
      const victim = this.#heapPop()!;
      if (this.#isCurrent(victim)) {
        this.#remove(victim);
        return;
      }
    }
  }

  #compactHeapIfStale(): void {
    if (this.#heap.length <= 2 * this.#count + 64) return;
    this.#heap = this.#heap.filter((entry) => this.#isCurrent(entry));
    for (let i = (this.#heap.length >> 1) - 1; i >= 0; i--) this.#siftDown(i);
  }

  static #before(a: Entry, b: Entry): boolean {
    return a.expiresAt < b.expiresAt || (a.expiresAt === b.expiresAt && a.sequence < b.sequence);
  }

  #heapPush(entry: Entry): void {
    const heap = this.#heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!DnsCache.#before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  #heapPop(): Entry | undefined {
    const heap = this.#heap;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      this.#siftDown(0);
    }
    return top;
  }

  #siftDown(start: number): void {
    const heap = this.#heap;
    let i = start;
    for (;;) {
      const left = 2 * i + 1, right = left + 1;
      let smallest = i;
      if (left < heap.length && DnsCache.#before(heap[left], heap[smallest])) smallest = left;
      if (right < heap.length && DnsCache.#before(heap[right], heap[smallest])) smallest = right;
      if (smallest === i) return;
      [heap[i], heap[smallest]] = [heap[smallest], heap[i]];
      i = smallest;
    }
  }
}
