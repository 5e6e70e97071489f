// Package reputation check (extras.md §1): asks the reputation API about a registry download and
// says whether to block it. Uses only web-standard APIs (fetch, AbortController, timers), so it runs
// under Deno and Node. The proxy calls `checkRequest(url)` on every request it forwards and, for a
// "block" verdict, `packageVerdictEffect` to build the reply and the log fields.
//
// Fail open by design (extras.md): any failure of the service gives "unknown", which allows the
// download and is written to the operational log.

import { packageFromUrl } from "./purl.ts";

export const DEFAULT_PACKAGE_CHECK_URL = "https://firewall-api.socket.dev";
export const PACKAGE_CHECK_ENV = "EGRESS_PACKAGE_CHECK_URL";

export type PackageVerdict = {
  verdict: "block" | "ok" | "unknown" | "not_a_package";
  /** Present unless `not_a_package`. */
  purl?: string;
  /** `block` only: the `type`s of the alerts whose action is "error". */
  reasons?: string[];
};

/** Where failures go; the daemon passes its OperationalLog. */
export type PackageCheckLog = { warn(message: string): void };

export type PackageCheckerOptions = {
  /** API base; default `https://firewall-api.socket.dev`. */
  baseUrl?: string;
  /** egress version for `User-Agent: egress/<version>`. */
  version: string;
  /** Per lookup, connect to end of the first line; default 2000 ms. */
  timeoutMs?: number;
  /** block/ok verdicts kept (LRU); default 10 000. */
  cacheSize?: number;
  /** How long an "unknown" is reused before the service is asked again; default 60 000 ms. */
  unknownTtlMs?: number;
  /** Clock in ms (tests); default Date.now. */
  now?: () => number;
  /** HTTP client (tests); default the global fetch. */
  fetch?: typeof fetch;
  log?: PackageCheckLog;
};

/** Most bytes read while looking for the end of the first NDJSON line. */
const MAX_FIRST_LINE_BYTES = 1 << 20;

/**
 * The API base from `--package-check-url`, else `EGRESS_PACKAGE_CHECK_URL`, else the default.
 * @throws Error when the chosen value is not an http(s) URL.
 */
export function packageCheckBaseUrl(flag?: string, env?: string): string {
  const chosen = flag ?? (env !== undefined && env !== "" ? env : undefined);
  if (chosen === undefined) return DEFAULT_PACKAGE_CHECK_URL;
  // Name where the value came from: a bad environment variable is hard to spot otherwise.
  const source = flag !== undefined ? "--package-check-url" : PACKAGE_CHECK_ENV;
  let parsed: URL;
  try {
    parsed = new URL(chosen);
  } catch {
    throw new Error(`Cannot use ${source} ${JSON.stringify(chosen)}: not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`Cannot use ${source} ${JSON.stringify(chosen)}: scheme must be http or https`);
  }
  return chosen.replace(/\/+$/, "");
}

/** Percent-encodes every character except the unreserved `A-Z a-z 0-9 - . _ ~`. */
export function encodePurl(purl: string): string {
  return encodeURIComponent(purl).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

type Lookup = { verdict: "block" | "ok" | "unknown"; reasons?: string[] };

export class PackageChecker {
  readonly baseUrl: string;
  readonly #userAgent: string;
  readonly #timeoutMs: number;
  readonly #cacheSize: number;
  readonly #unknownTtlMs: number;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  readonly #log: PackageCheckLog | undefined;
  /** block/ok per PURL, least recently used first (Map keeps insertion order). */
  readonly #verdicts = new Map<string, Lookup>();
  /** PURL → time until which "unknown" is reused. */
  readonly #unknownUntil = new Map<string, number>();
  readonly #inFlight = new Map<string, Promise<Lookup>>();
  /** Number of requests sent to the service (tests, status counters). */
  lookups = 0;

  constructor(options: PackageCheckerOptions) {
    this.baseUrl = (options.baseUrl ?? DEFAULT_PACKAGE_CHECK_URL).replace(/\/+$/, "");
    this.#userAgent = `egress/${options.version}`;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#cacheSize = options.cacheSize ?? 10_000;
    this.#unknownTtlMs = options.unknownTtlMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#log = options.log;
  }

  /** Verdict for a request URL; `not_a_package` when it is no registry download. Never rejects. */
  async checkRequest(url: string): Promise<PackageVerdict> {
    const ref = packageFromUrl(url);
    if (ref === undefined) return { verdict: "not_a_package" };
    return await this.checkPurl(ref.purl);
  }

  /** Verdict for a PURL (cached; concurrent calls share one lookup). Never rejects. */
  async checkPurl(purl: string): Promise<PackageVerdict> {
    const cached = this.#verdicts.get(purl);
    if (cached !== undefined) {
      this.#verdicts.delete(purl); // refresh its LRU position
      this.#verdicts.set(purl, cached);
      return toVerdict(purl, cached);
    }
    const until = this.#unknownUntil.get(purl);
    if (until !== undefined) {
      if (this.#now() < until) return { verdict: "unknown", purl };
      this.#unknownUntil.delete(purl);
    }
    let pending = this.#inFlight.get(purl);
    if (pending === undefined) {
      pending = this.#lookup(purl).finally(() => this.#inFlight.delete(purl));
      this.#inFlight.set(purl, pending);
    }
    return toVerdict(purl, await pending);
  }

  async #lookup(purl: string): Promise<Lookup> {
    let result: Lookup;
    try {
      result = await this.#ask(purl);
    } catch (e) {
      this.#log?.warn(
        `Cannot check package ${purl}: ${e instanceof Error ? e.message : String(e)}; allowed (fail open)`,
      );
      result = { verdict: "unknown" };
    }
    // Both maps are bounded: while the service is down, every distinct URL a job (or an attacker
    // inventing versions) fetches would otherwise add an "unknown" for the daemon's whole life.
    const cache = result.verdict === "unknown" ? this.#unknownUntil : this.#verdicts;
    if (result.verdict === "unknown") this.#unknownUntil.set(purl, this.#now() + this.#unknownTtlMs);
    else this.#verdicts.set(purl, result);
    while (cache.size > this.#cacheSize) cache.delete(cache.keys().next().value as string);
    return result;
  }

  async #ask(purl: string): Promise<Lookup> {
    this.lookups++;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#timeoutMs);
    try {
      let response: Response;
      try {
        response = await this.#fetch(`${this.baseUrl}/purl/${encodePurl(purl)}`, {
          headers: { "User-Agent": this.#userAgent, "Accept": "application/x-ndjson, application/json" },
          signal: controller.signal,
        });
      } catch (e) {
        throw new Error(
          timedOut ? `no answer within ${this.#timeoutMs} ms` : `request failed: ${message(e)}`,
        );
      }
      if (response.status === 429) {
        await response.body?.cancel();
        this.#log?.warn(
          `Cannot check package ${purl}: rate limited by the service (HTTP 429); allowed (fail open)`,
        );
        return { verdict: "unknown" };
      }
      if (response.status !== 200) {
        await response.body?.cancel();
        throw new Error(`service answered HTTP ${response.status}`);
      }
      let line: string;
      try {
        line = await firstLine(response);
      } catch (e) {
        throw new Error(
          timedOut ? `no answer within ${this.#timeoutMs} ms` : `cannot read the answer: ${message(e)}`,
        );
      }
      return judge(line);
    } finally {
      clearTimeout(timer);
    }
  }
}

function toVerdict(purl: string, lookup: Lookup): PackageVerdict {
  return lookup.verdict === "block"
    ? { verdict: "block", purl, reasons: [...lookup.reasons ?? []] }
    : { verdict: lookup.verdict, purl };
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads the body up to the first newline (or its end); the rest is never read. */
async function firstLine(response: Response): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      const newline = value.indexOf(0x0a);
      if (newline >= 0) {
        chunks.push(value.subarray(0, newline));
        break;
      }
      chunks.push(value);
      total += value.length;
      if (total > MAX_FIRST_LINE_BYTES) {
        throw new Error(`first line longer than ${MAX_FIRST_LINE_BYTES} bytes`);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return decoder.decode(bytes);
}

/** Blocked iff an alert has `action == "error"`; reasons are those alerts' types. */
function judge(line: string): Lookup {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new Error("the answer is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("the answer is not a JSON object");
  }
  const alerts = (value as Record<string, unknown>).alerts;
  if (alerts === undefined || alerts === null) return { verdict: "ok" };
  if (!Array.isArray(alerts)) throw new Error('the answer\'s "alerts" is not an array');
  const reasons: string[] = [];
  for (const alert of alerts) {
    if (typeof alert !== "object" || alert === null) continue;
    const { action, type } = alert as Record<string, unknown>;
    if (action !== "error") continue;
    const reason = typeof type === "string" && type !== "" ? type : "unknown";
    if (!reasons.includes(reason)) reasons.push(reason);
  }
  return reasons.length > 0 ? { verdict: "block", reasons } : { verdict: "ok" };
}

/** Connection-log fields and, in enforce mode, the reply for a flagged download. */
export type PackageEffect =
  | { action: "forward" }
  | {
    action: "block" | "forward";
    /** Merged into the request's log line (after `rule`/`line` of the allowing rule). */
    logFields: {
      policy: "deny";
      reason: string;
      security_block: true;
      purl: string;
      reasons: string[];
      audit?: true;
    };
    /** Enforce mode: what the proxy sends instead of forwarding. */
    response?: { status: 403; headers: { "content-type": "text/plain" }; body: string };
    /** Audit mode: the operational-log warning. */
    warning?: string;
  };

/**
 * What the proxy does with a verdict: "ok", "unknown" and "not_a_package" forward unchanged;
 * "block" replies 403 in enforce mode, and in audit mode forwards with the same log fields plus
 * `audit: true` and a warning for the operational log.
 */
export function packageVerdictEffect(verdict: PackageVerdict, options: { audit: boolean }): PackageEffect {
  if (verdict.verdict !== "block" || verdict.purl === undefined) return { action: "forward" };
  const reasons = [...verdict.reasons ?? []];
  const logFields = {
    policy: "deny" as const,
    reason: `package flagged: ${reasons.join(", ")}`,
    security_block: true as const,
    purl: verdict.purl,
    reasons,
  };
  if (options.audit) {
    return {
      action: "forward",
      logFields: { ...logFields, audit: true },
      warning: `package check flagged ${verdict.purl} (${reasons.join(", ")}); allowed in audit mode`,
    };
  }
  return {
    action: "block",
    logFields,
    response: {
      status: 403,
      headers: { "content-type": "text/plain" },
      body: `Blocked by package check: ${verdict.purl}`,
    },
  };
}
