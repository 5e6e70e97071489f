// Operational log (events.md §5): `2026-02-18T10:30:45.123Z INFO message` lines to a file and
// stderr. Writes are synchronous: operational events are rare and must survive a crash right
// after them. Same scrubbing as the connection log.

import { defaultScrubber, type Scrubber } from "./scrub.ts";

export type LogLevel = "DEBUG" | "INFO" | "WARN" | "ERROR";

/** Pure: one line without the newline; control characters (incl. newlines) are escaped. */
export function formatOperationalLine(
  level: LogLevel,
  message: string,
  date: Date = new Date(),
  scrubber: Scrubber = defaultScrubber,
): string {
  // deno-lint-ignore no-control-regex
  const oneLine = scrubber.text(message).replace(/[\u0000-\u001f\u007f]/g, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
  return `${date.toISOString()} ${level} ${oneLine}`;
}

export type OperationalLogOptions = {
  /** file to append to (directory created 0755, file 0644); omit for stderr only */
  path?: string;
  /** also write to stderr (default true) */
  stderr?: boolean;
  /** DEBUG lines; default: EGRESS_DEBUG=1 in the environment */
  debug?: boolean;
  scrubber?: Scrubber;
  now?: () => Date;
  /**
   * WARN and ERROR lines written per `floodWindowMs` (default 100 per 10 s); beyond that they are
   * counted and the count is written when the next window starts (or at close). Clients can
   * provoke these lines (refused connections, unreachable upstreams), and a flood must not fill
   * the disk or stall the proxy on synchronous writes. INFO (startup, shutdown, cleanup) and
   * opt-in DEBUG lines are never held back.
   */
  floodLimit?: number;
  floodWindowMs?: number;
};

type SyncWriter = { writeSync(p: Uint8Array): number };

export class OperationalLog {
  #file: Deno.FsFile | undefined;
  readonly #stderr: boolean;
  readonly debugEnabled: boolean;
  #scrubber: Scrubber;
  readonly #now: () => Date;
  readonly #encoder = new TextEncoder();
  #fileFailed = false;
  readonly #floodLimit: number;
  readonly #floodWindowMs: number;
  #windowStart = 0;
  #windowLines = 0;
  #suppressed = 0;

  constructor(options: OperationalLogOptions = {}) {
    this.#stderr = options.stderr ?? true;
    this.debugEnabled = options.debug ?? debugFromEnvironment();
    this.#scrubber = options.scrubber ?? defaultScrubber;
    this.#now = options.now ?? (() => new Date());
    this.#floodLimit = options.floodLimit ?? 100;
    this.#floodWindowMs = options.floodWindowMs ?? 10_000;
    if (options.path !== undefined) {
      const slash = options.path.lastIndexOf("/");
      try {
        if (slash > 0) Deno.mkdirSync(options.path.slice(0, slash), { recursive: true, mode: 0o755 });
        this.#file = Deno.openSync(options.path, { append: true, create: true, mode: 0o644 });
      } catch (error) {
        throw new Error(`Cannot open operational log ${options.path}: ${(error as Error).message}`);
      }
    }
  }

  /** Replaces the scrubber (e.g. once the configured tokens are known). */
  setScrubber(scrubber: Scrubber): void {
    this.#scrubber = scrubber;
  }

  debug(message: string): void {
    if (this.debugEnabled) this.log("DEBUG", message);
  }
  info(message: string): void {
    this.log("INFO", message);
  }
  warn(message: string): void {
    this.log("WARN", message);
  }
  error(message: string): void {
    this.log("ERROR", message);
  }

  log(level: LogLevel, message: string): void {
    if (level === "DEBUG" && !this.debugEnabled) return;
    const date = this.#now();
    if ((level === "WARN" || level === "ERROR") && !this.#admit(date)) return;
    this.#write(formatOperationalLine(level, message, date, this.#scrubber));
  }

  /** Counts a rate-limited line; false when it is suppressed. */
  #admit(date: Date): boolean {
    const now = date.getTime();
    if (now - this.#windowStart >= this.#floodWindowMs || now < this.#windowStart) {
      this.#reportSuppressed(date);
      this.#windowStart = now;
      this.#windowLines = 0;
    }
    if (this.#windowLines >= this.#floodLimit) {
      this.#suppressed++;
      return false;
    }
    this.#windowLines++;
    return true;
  }

  #reportSuppressed(date: Date): void {
    if (this.#suppressed === 0) return;
    const text = `operational log: ${this.#suppressed} WARN/ERROR lines suppressed ` +
      `(more than ${this.#floodLimit} in ${this.#floodWindowMs} ms)`;
    this.#suppressed = 0;
    this.#write(formatOperationalLine("WARN", text, date, this.#scrubber));
  }

  #write(line: string): void {
    const bytes = this.#encoder.encode(line + "\n");
    if (this.#file && !this.#fileFailed) {
      try {
        writeAllSync(this.#file, bytes);
      } catch (error) {
        // Keep going on stderr; say once why the file stopped.
        this.#fileFailed = true;
        const why = formatOperationalLine(
          "ERROR",
          `Cannot write operational log: ${(error as Error).message}`,
        );
        if (this.#stderr) this.#writeStderr(this.#encoder.encode(why + "\n"));
      }
    }
    if (this.#stderr) this.#writeStderr(bytes);
  }

  #writeStderr(bytes: Uint8Array): void {
    try {
      writeAllSync(Deno.stderr, bytes);
    } catch {
      // stderr closed: nothing left to tell
    }
  }

  /** Idempotent. */
  close(): void {
    this.#reportSuppressed(this.#now());
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = undefined;
  }
}

function debugFromEnvironment(): boolean {
  try {
    return Deno.env.get("EGRESS_DEBUG") === "1";
  } catch {
    return false; // no --allow-env
  }
}

function writeAllSync(writer: SyncWriter, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) {
    const n = writer.writeSync(bytes.subarray(offset));
    if (n <= 0) throw new Error("wrote 0 bytes");
    offset += n;
  }
}
