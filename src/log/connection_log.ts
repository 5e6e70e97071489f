// Connection log (events.md): one JSON object per line, keys in the §3 order, secrets scrubbed.
// Line building is pure (formatConnectionLine); the writer uses Deno file APIs and never makes its
// caller wait: lines go to a bounded queue drained by one async writer loop, so lines never
// interleave and a slow disk costs dropped lines (counted and reported), not a stalled proxy.

import { scrubAbsoluteUrl } from "../proto/url_scrub.ts";
import { defaultScrubber, type Scrubber } from "./scrub.ts";
import type { ProcessFields } from "../proc/process_fields.ts";
import type { LogLineFields, LogLineType } from "./line_fields.ts";

export type { LogLineType };

/** One connection-log event. Field meanings: events.md §3. Absent or empty fields are omitted. */
export type ConnectionLogEvent =
  & {
    /** defaults to now; a Date, epoch milliseconds, or an ISO string with milliseconds and `Z` */
    ts?: Date | number | string;
    type: LogLineType;
  }
  & LogLineFields
  & {
    audit?: boolean;
    passthrough?: boolean;
    insecure?: boolean;
    error?: string;
    security_block?: boolean;
    purl?: string;
    reasons?: string[];
    github_token?: boolean;
    pwd?: string;
    target_user?: string;
  }
  & Partial<ProcessFields>;

type FieldKind =
  | "ts"
  | "enum" // written as given (type, policy)
  | "str" // non-empty string, scrubbed
  | "anystr" // string, may be empty, scrubbed
  | "port"
  | "uint"
  | "pid"
  | "yes"
  | "strs"
  | "argv"
  | "host"
  | "url";

/** events.md §3 key order. */
const FIELDS: ReadonlyArray<readonly [keyof ConnectionLogEvent, FieldKind]> = [
  ["ts", "ts"],
  ["type", "enum"],
  ["dst_ip", "str"],
  ["dst_port", "port"],
  ["src_port", "port"],
  ["host", "host"],
  ["url", "url"],
  ["method", "str"],
  ["name", "anystr"],
  ["answers", "strs"],
  ["ttl", "uint"],
  ["policy", "enum"],
  ["rule", "str"],
  ["line", "uint"],
  ["reason", "str"],
  ["audit", "yes"],
  ["passthrough", "yes"],
  ["insecure", "yes"],
  ["error", "str"],
  ["security_block", "yes"],
  ["purl", "str"],
  ["reasons", "strs"],
  ["github_token", "yes"],
  ["pwd", "anystr"],
  ["target_user", "anystr"],
  ["pid", "pid"],
  ["exe", "str"],
  ["cmdline", "argv"],
  ["cgroup", "str"],
  ["image", "str"],
  ["step", "str"],
  ["action", "str"],
];

export const CONNECTION_LOG_KEYS: readonly string[] = FIELDS.map(([key]) => key);

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const DST_IP = /^(?:\d{1,3}\.){3}\d{1,3}$/;

function formatTs(ts: ConnectionLogEvent["ts"], now: () => Date): string {
  if (typeof ts === "string" && ISO_MS.test(ts)) return ts;
  const date = ts instanceof Date ? ts : typeof ts === "number" ? new Date(ts) : now();
  const iso = Number.isNaN(date.getTime()) ? now().toISOString() : date.toISOString();
  return ISO_MS.test(iso) ? iso : now().toISOString();
}

/**
 * Builds one log line (without the newline). Keys follow events.md §3; absent, empty or invalid
 * values are omitted; every free-text string passes through `scrubber`; `dst_ip`/ports default to
 * `"unknown"`/0 on non-sudo lines.
 */
export function formatConnectionLine(
  event: ConnectionLogEvent,
  scrubber: Scrubber = defaultScrubber,
  now: () => Date = () => new Date(),
): string {
  const parts: string[] = [];
  const isSudo = event.type === "sudo";
  for (const [key, kind] of FIELDS) {
    let value: unknown = event[key];
    if (!isSudo && value === undefined) {
      if (key === "dst_ip") value = "unknown";
      else if (key === "dst_port" || key === "src_port") value = 0;
    }
    if (isSudo && (key === "dst_ip" || key === "dst_port" || key === "src_port" || key === "policy")) {
      continue;
    }
    let json: string | undefined;
    switch (kind) {
      case "ts":
        json = JSON.stringify(formatTs(event.ts, now));
        break;
      case "enum":
        if (typeof value === "string" && value.length > 0) json = JSON.stringify(value);
        break;
      case "str":
        if (typeof value === "string" && value.length > 0) {
          if (key === "dst_ip") {
            json = JSON.stringify(value === "unknown" || DST_IP.test(value) ? value : "unknown");
          } else {
            const scrubbed = scrubber.text(value);
            if (scrubbed.length > 0) json = JSON.stringify(scrubbed);
          }
        }
        break;
      case "anystr":
        if (typeof value === "string") json = JSON.stringify(scrubber.text(value));
        break;
      case "port":
        json = String(
          Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 65535 ? value : 0,
        );
        break;
      case "uint":
        if (Number.isSafeInteger(value) && (value as number) >= 0) json = String(value);
        break;
      case "pid":
        if (Number.isSafeInteger(value) && (value as number) >= 1) json = String(value);
        break;
      case "yes":
        if (value === true) json = "true";
        break;
      case "strs":
        if (Array.isArray(value)) {
          json = JSON.stringify(value.filter((v) => typeof v === "string").map((v) => scrubber.text(v)));
        }
        break;
      case "argv":
        if (Array.isArray(value) && value.length > 0) {
          json = JSON.stringify(scrubber.argv(value.map((v) => String(v))));
        }
        break;
      case "host":
        if (typeof value === "string" && value.length > 0) json = JSON.stringify(scrubber.text(value));
        else if (
          event.type === "https" && event.url === undefined && typeof event.error === "string" &&
          event.error.length > 0
        ) {
          // Only the TLS-stage error line (no request, so no url) says "no SNI" with null.
          json = "null";
        }
        break;
      case "url":
        if (typeof value === "string") {
          const scrubbed = scrubAbsoluteUrl(value);
          if (scrubbed !== undefined) json = JSON.stringify(scrubber.text(scrubbed));
        }
        break;
    }
    if (json !== undefined) parts.push(`"${key}":${json}`);
  }
  return `{${parts.join(",")}}`;
}

// ---------------------------------------------------------------- writer

export type ConnectionLogOptions = {
  /** file path, or "-" for stdout (sidecar); a file is opened in append mode (0644) */
  path: string;
  scrubber?: Scrubber;
  /** lines held while the writer is busy; beyond this, lines are dropped and counted */
  maxQueuedLines?: number;
  /** rotate `path` → `path.1` before a write would grow the file beyond this (0: never) */
  maxFileBytes?: number;
  /** called by the writer loop after it catches up, with the lines dropped since the last call */
  onDropped?: (count: number, total: number) => void;
  /** called once per failing write or rotation; the lines of that write are counted as dropped */
  onError?: (error: Error) => void;
  /**
   * Where drops and write errors are reported when onDropped/onError are not given: the
   * operational log (`WARN connection log: dropped …`, `ERROR Cannot write connection log …`).
   */
  reporter?: { warn(message: string): void; error(message: string): void };
  now?: () => Date;
};

const BATCH_BYTES = 64 * 1024;

type Sink = {
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
};

export class ConnectionLog {
  readonly path: string;
  #sink: Sink;
  #size: number;
  readonly #scrubber: Scrubber;
  readonly #maxQueued: number;
  readonly #maxBytes: number;
  readonly #onDropped?: (count: number, total: number) => void;
  readonly #onError?: (error: Error) => void;
  readonly #now: () => Date;
  #queue: string[] = [];
  #running: Promise<void> | undefined;
  #closed = false;
  #dropped = 0;
  #droppedReported = 0;
  #written = 0;
  readonly #encoder = new TextEncoder();

  private constructor(options: ConnectionLogOptions, sink: Sink, size: number) {
    this.path = options.path;
    this.#sink = sink;
    this.#size = size;
    this.#scrubber = options.scrubber ?? defaultScrubber;
    this.#maxQueued = options.maxQueuedLines ?? 10_000;
    this.#maxBytes = options.path === "-" ? 0 : options.maxFileBytes ?? 0;
    const reporter = options.reporter;
    this.#onDropped = options.onDropped ??
      (reporter &&
        ((count, total) => reporter.warn(`connection log: dropped ${count} lines (${total} since start)`)));
    this.#onError = options.onError ??
      (reporter &&
        ((error) => reporter.error(`Cannot write connection log ${options.path}: ${error.message}`)));
    this.#now = options.now ?? (() => new Date());
  }

  /** Opens (creating the directory 0755 and the file 0644 if needed) for appending. */
  static async open(options: ConnectionLogOptions): Promise<ConnectionLog> {
    if (options.path === "-") {
      const sink: Sink = { write: (b) => Deno.stdout.write(b), close: () => {} };
      return new ConnectionLog(options, sink, 0);
    }
    const { file, size } = await openAppend(options.path);
    return new ConnectionLog(options, file, size);
  }

  /** Lines dropped so far (queue full, closed log, or failed writes). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Lines handed to the file so far. */
  get written(): number {
    return this.#written;
  }

  /** Queues one event; returns false when it was dropped. Never waits. */
  write(event: ConnectionLogEvent): boolean {
    if (this.#closed || this.#queue.length >= this.#maxQueued) {
      this.#dropped++;
      return false;
    }
    this.#queue.push(formatConnectionLine(event, this.#scrubber, this.#now));
    this.#running ??= this.#drain();
    return true;
  }

  /** Resolves when every line queued before the call has been written (or dropped on error). */
  async flush(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** Flushes, then closes the file; later writes are dropped. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return await this.flush();
    this.#closed = true;
    await this.flush();
    try {
      this.#sink.close();
    } catch {
      // already closed
    }
  }

  async #drain(): Promise<void> {
    try {
      await null; // always yield first, so #running is assigned before this can finish
      while (this.#queue.length > 0) {
        // Take a batch of whole lines, bounded in bytes, so rotation can happen between batches.
        let batch = "";
        let lines = 0;
        while (lines < this.#queue.length && (lines === 0 || batch.length < BATCH_BYTES)) {
          batch += this.#queue[lines++] + "\n";
        }
        this.#queue.splice(0, lines);
        const bytes = this.#encoder.encode(batch);
        try {
          if (this.#maxBytes > 0 && this.#size > 0 && this.#size + bytes.length > this.#maxBytes) {
            await this.#rotate();
          }
          await writeAll(this.#sink, bytes);
          this.#size += bytes.length;
          this.#written += lines;
        } catch (error) {
          this.#dropped += lines;
          this.#onError?.(error instanceof Error ? error : new Error(String(error)));
        }
      }
      if (this.#dropped > this.#droppedReported) {
        const count = this.#dropped - this.#droppedReported;
        this.#droppedReported = this.#dropped;
        this.#onDropped?.(count, this.#dropped);
      }
    } finally {
      this.#running = undefined;
      // Lines queued by a callback above need another pass.
      if (this.#queue.length > 0 && !this.#running) this.#running = this.#drain();
    }
  }

  async #rotate(): Promise<void> {
    this.#sink.close();
    try {
      await Deno.rename(this.path, `${this.path}.1`);
    } catch (error) {
      // Someone removed the file: start a new one rather than losing lines.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    } finally {
      const { file, size } = await openAppend(this.path);
      this.#sink = file;
      this.#size = size;
    }
  }
}

async function openAppend(path: string): Promise<{ file: Deno.FsFile; size: number }> {
  const slash = path.lastIndexOf("/");
  try {
    if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true, mode: 0o755 });
    const file = await Deno.open(path, { append: true, create: true, mode: 0o644 });
    const size = (await file.stat()).size;
    return { file, size };
  } catch (error) {
    throw new Error(`Cannot open connection log ${path}: ${(error as Error).message}`);
  }
}

async function writeAll(sink: Sink, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const n = await sink.write(bytes.subarray(offset));
    if (n <= 0) throw new Error("Cannot write connection log: wrote 0 bytes");
    offset += n;
  }
}
