// Rate limiter for "denied UDP flow" log lines: a denied flow's packets keep coming through the
// queue (each one is dropped), but its 5-tuple is logged at most once per interval (60 s). The
// table is bounded: past `capacity` flows the least recently seen one is forgotten (it may then be
// logged again early, which costs a line, never a decision). Pure: no Deno API, clock injected.

export type FlowLogLimiterOptions = {
  /** minimum time between two log lines of one flow, ms (default 60 000) */
  intervalMs?: number;
  /** flows remembered at most (default 10 000) */
  capacity?: number;
  /** clock in ms (default Date.now) */
  now?: () => number;
};

type FlowEntry = { loggedAt: number; suppressed: number };

/** The 5-tuple; addresses as uint32 numbers (see src/proto/ipv4_udp.ts) or strings. */
export type FlowTuple = {
  protocol: number;
  srcAddr: number | string;
  srcPort: number;
  dstAddr: number | string;
  dstPort: number;
};

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot create a flow log limiter: ${name} must be a positive integer, got ${value}`,
    );
  }
  return value;
}

export class FlowLogLimiter {
  readonly intervalMs: number;
  readonly capacity: number;
  readonly #now: () => number;
  // Map iteration order is insertion order: re-inserting on every hit keeps it least-recent first.
  readonly #flows = new Map<string, FlowEntry>();
  #suppressedBeforeLast = 0;

  constructor(options: FlowLogLimiterOptions = {}) {
    this.intervalMs = positiveInteger("intervalMs", options.intervalMs ?? 60_000);
    this.capacity = positiveInteger("capacity", options.capacity ?? 10_000);
    this.#now = options.now ?? Date.now;
  }

  /** Flows currently remembered. */
  get size(): number {
    return this.#flows.size;
  }

  /**
   * After shouldLog returned true: how many events of that flow were suppressed since its previous
   * log line (0 for a new flow), for a "… and N more" field.
   */
  get suppressedBeforeLast(): number {
    return this.#suppressedBeforeLast;
  }

  /** True when this denied flow should be logged now (first time, or the interval has passed). */
  shouldLog(flow: FlowTuple): boolean {
    return this.shouldLogKey(
      `${flow.protocol}|${flow.srcAddr}|${flow.srcPort}|${flow.dstAddr}|${flow.dstPort}`,
    );
  }

  /** shouldLog for a caller-built key (any string that identifies the flow). */
  shouldLogKey(key: string): boolean {
    const now = this.#now();
    const entry = this.#flows.get(key);
    if (entry !== undefined) {
      this.#flows.delete(key);
      this.#flows.set(key, entry);
      // A clock that steps backwards must not silence a flow for longer than the interval.
      if (now - entry.loggedAt >= this.intervalMs || now < entry.loggedAt) {
        this.#suppressedBeforeLast = entry.suppressed;
        entry.loggedAt = now;
        entry.suppressed = 0;
        return true;
      }
      entry.suppressed++;
      return false;
    }
    this.#flows.set(key, { loggedAt: now, suppressed: 0 });
    while (this.#flows.size > this.capacity) {
      const oldest = this.#flows.keys().next().value as string;
      this.#flows.delete(oldest);
    }
    this.#suppressedBeforeLast = 0;
    return true;
  }

  /** Forgets every flow. */
  clear(): void {
    this.#flows.clear();
  }
}
