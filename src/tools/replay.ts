// The replay of a connection log against a policy (cli.md §analyze), shared by `egress analyze`
// and `egress suggest` (whose `suggestPolicy` the job summary calls under Node): the log line
// types and their JSON Lines parser, the replay's DNS cache, the enforce-mode verdicts and the
// library options the shared flags select. Pure: no Deno API, no node: module. Reading the log
// file stays in `src/cli/connection_log.ts`.

import { LOG_LINE_TYPES, type LogLineFields, type LogLineType } from "../log/line_fields.ts";
import type { ProcessFields } from "../proc/process_fields.ts";
import { RUNNER_CGROUP } from "../policy/builtins.ts";
import { DnsCache, Enforcer } from "../policy/mod.ts";
import { parseEventUrl } from "../policy/matcher.ts";
import type { Policy } from "../policy/policy.ts";
import type { ConnectionEvent, Decision, PolicyOptions } from "../policy/types.ts";

// ---------------------------------------------------------------------------------------------
// Log lines (events.md §3). Malformed lines are reported with their line number and skipped.

export type LogType = LogLineType;
const LOG_TYPES: ReadonlySet<string> = new Set(LOG_LINE_TYPES);

/** The fields of a log line the CLI uses; others are kept as they are in `raw`. */
export type LogEvent =
  & {
    type: LogType;
    ts?: string;
  }
  & LogLineFields
  & {
    error?: string;
    audit?: true;
    passthrough?: true;
    insecure?: true;
  }
  & Partial<ProcessFields>;

export type LogEntry = { /** 1-based line in the log file */ lineNumber: number; event: LogEvent };
export type LogProblem = { lineNumber: number; reason: string };
export type ParsedLog = { entries: LogEntry[]; problems: LogProblem[] };

const STRING_FIELDS = [
  "ts",
  "dst_ip",
  "url",
  "method",
  "name",
  "rule",
  "reason",
  "error",
  "exe",
  "cgroup",
  "image",
  "step",
  "action",
] as const;
const PORT_FIELDS = ["dst_port", "src_port"] as const;

/** Splits at \n (and \r\n); blank lines are ignored silently. */
export function parseConnectionLog(text: string): ParsedLog {
  const entries: LogEntry[] = [];
  const problems: LogProblem[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (raw.trim() === "") continue;
    const lineNumber = i + 1;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      // The parser's message quotes the line; a log line can be long, so the reason stays short.
      problems.push({ lineNumber, reason: "not valid JSON" });
      continue;
    }
    const reason = checkLogLine(value);
    if (reason !== undefined) problems.push({ lineNumber, reason });
    else entries.push({ lineNumber, event: value as LogEvent });
  }
  return { entries, problems };
}

/** Undefined when `value` is a usable log line, else why not. */
function checkLogLine(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const o = value as Record<string, unknown>;
  if (typeof o.type !== "string") return 'missing "type"';
  if (!LOG_TYPES.has(o.type)) return `unknown type ${JSON.stringify(o.type)}`;
  for (const key of STRING_FIELDS) {
    if (key in o && typeof o[key] !== "string") return `"${key}" must be a string`;
  }
  for (const key of PORT_FIELDS) {
    if (key in o && !isPort(o[key])) return `"${key}" must be an integer 0..65535`;
  }
  if ("host" in o && o.host !== null && typeof o.host !== "string") return '"host" must be a string or null';
  if ("cmdline" in o && !isStringArray(o.cmdline)) return '"cmdline" must be an array of strings';
  if ("answers" in o && !isStringArray(o.answers)) return '"answers" must be an array of strings';
  if ("ttl" in o && !(Number.isInteger(o.ttl) && (o.ttl as number) >= 0)) {
    return '"ttl" must be a non-negative integer';
  }
  if ("line" in o && !(Number.isInteger(o.line) && (o.line as number) >= 0)) {
    return '"line" must be a non-negative integer';
  }
  if (o.type === "sudo") return undefined;
  if (typeof o.dst_ip !== "string") return `missing "dst_ip" on a ${o.type} line`;
  if (!("dst_port" in o)) return `missing "dst_port" on a ${o.type} line`;
  if ((o.type === "dns" || o.type === "dns_response") && typeof o.name !== "string") {
    return `missing "name" on a ${o.type} line`;
  }
  if (o.type === "dns_response" && (!("answers" in o) || !("ttl" in o))) {
    return 'dns_response needs "answers" and "ttl"';
  }
  if ("url" in o && o.type !== "http" && o.type !== "https") return `"url" on a ${o.type} line`;
  // events.md §6: a request URL starts with its scheme; anything else is not a line egress wrote.
  if ("url" in o && !/^https?:\/\/[^/?#]/i.test(o.url as string)) {
    return '"url" must start with http:// or https://';
  }
  return undefined;
}

function isPort(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
}

function isStringArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

// ---------------------------------------------------------------------------------------------
// Library options

/** `{runner: true}` by default; the flags as cli.md §validate says. */
export function libraryOptions(
  flags: { noDefaults: boolean; noRunnerCgroup: boolean },
  repository?: string,
): PolicyOptions {
  const options: PolicyOptions = {};
  if (flags.noDefaults && flags.noRunnerCgroup) options.runner = false;
  else if (flags.noDefaults) {
    options.runner = false;
    options.defaults = { attrs: { cgroup: RUNNER_CGROUP } };
  } else if (flags.noRunnerCgroup) {
    options.runner = true;
    options.defaults = { attrs: {} };
  } else options.runner = true;
  if (repository !== undefined) options.repository = repository;
  return options;
}

// ---------------------------------------------------------------------------------------------
// Replay (cli.md §analyze steps 3–6)

/** Never expires: a log replay has no clock, every recorded resolution stays valid. */
const FOREVER_SECONDS = 100 * 365 * 24 * 3600;

/** Process fields of a log line: judged, part of the dedup key, shown with a finding. */
export const PROCESS_FIELDS = ["exe", "cgroup", "image", "step", "action", "cmdline"] as const;

export type Status = "blocked" | "allowed" | "failed";

/** One unique connection of the log with its verdict. */
export type Finding = {
  status: Status;
  type: LogEvent["type"];
  destination: string;
  /** Destination IP of the first occurrence. */
  dst_ip?: string;
  process: Partial<Pick<LogEvent, (typeof PROCESS_FIELDS)[number]>>;
  count: number;
  /** Log line of the first occurrence. */
  first_line: number;
  /** Deny reason, or the `error` of a failed line. */
  reason?: string;
  /** Source text of the allowing rule and its policy line (0 = built-in). */
  rule?: string;
  rule_line?: number;
  /** Workflow step label of the allowing rule. */
  rule_location?: string;
};

/**
 * Judges every connection line in enforce mode and groups them by dedup key (and verdict, since
 * lines with one key may differ in what decides them, e.g. the destination IP of a `tcp` line).
 * Order: first appearance.
 */
export function replay(
  entries: LogEntry[],
  policy: Policy,
  describe: (index: number) => { rule: string; line: number; location?: string },
): Finding[] {
  const enforcer = new Enforcer(policy, { dnsCache: replayCache(entries) });

  const groups = new Map<string, Finding>();
  for (const { lineNumber, event } of entries) {
    if (event.type === "dns_response" || event.type === "sudo") continue;
    let status: Status;
    let decision: Decision | undefined;
    if (event.error !== undefined) status = "failed";
    else {
      const { connection, mitm } = toConnectionEvent(event);
      decision = enforcer.decide(connection, { mitm });
      status = decision.allowed ? "allowed" : "blocked";
    }
    const key = `${status}\u0000${dedupKey(event)}`;
    const existing = groups.get(key);
    if (existing !== undefined) {
      existing.count++;
      continue;
    }
    const finding: Finding = {
      status,
      type: event.type,
      destination: destinationOf(event),
      ...(event.dst_ip !== undefined ? { dst_ip: event.dst_ip } : {}),
      process: processOf(event),
      count: 1,
      first_line: lineNumber,
    };
    if (status === "failed") finding.reason = event.error;
    else if (status === "blocked") finding.reason = decision!.reason;
    else if (decision!.index !== undefined) {
      const d = describe(decision!.index);
      finding.rule = d.rule;
      finding.rule_line = d.line;
      if (d.location !== undefined) finding.rule_location = d.location;
    }
    groups.set(key, finding);
  }
  return [...groups.values()];
}

/**
 * The cache a replay judges with (cli.md §analyze step 3), never expiring: the `dns_response`
 * answers and the IPs of certificate-verified `https` requests (dst_ip ↔ URL host), in log order.
 */
export function replayCache(entries: readonly LogEntry[]): DnsCache {
  const cache = new DnsCache({
    capacity: 1_000_000,
    minTtl: FOREVER_SECONDS,
    maxTtl: FOREVER_SECONDS,
    now: () => 0,
  });
  for (const { event } of entries) {
    if (event.type === "dns_response" && typeof event.name === "string" && Array.isArray(event.answers)) {
      if (event.answers.length > 0) cache.add(event.name, event.answers, FOREVER_SECONDS);
    } else if (
      event.type === "https" && typeof event.url === "string" && event.insecure !== true &&
      event.error === undefined && typeof event.dst_ip === "string"
    ) {
      const host = urlHost(event.url);
      if (host !== undefined && !/^\d+\.\d+\.\d+\.\d+$/.test(host) && !host.startsWith("[")) {
        cache.add(host, [event.dst_ip], FOREVER_SECONDS);
      }
    }
  }
  return cache;
}

/** The event the enforcer judges, as cli.md §analyze step 6 says. */
export function toConnectionEvent(e: LogEvent): { connection: ConnectionEvent; mitm: boolean } {
  const base: ConnectionEvent = { type: "tcp", dst_ip: e.dst_ip ?? "unknown", dst_port: e.dst_port ?? 0 };
  for (const key of PROCESS_FIELDS) {
    if (e[key] !== undefined) (base as Record<string, unknown>)[key] = e[key];
  }
  if (e.url !== undefined && (e.type === "http" || e.type === "https")) {
    // Requests on an insecure connection were judged as plain HTTP (policy.md §10.7).
    base.type = e.type === "https" && e.insecure === true ? "http" : e.type;
    base.url = e.url;
    if (e.method !== undefined) base.method = e.method;
    if (typeof e.host === "string") base.host = e.host;
    return { connection: base, mitm: false };
  }
  switch (e.type) {
    case "https":
    case "http":
      base.type = e.type;
      if (typeof e.host === "string" && e.host !== "") base.host = e.host;
      break;
    case "dns":
      base.type = "dns";
      if (e.name !== undefined) base.name = e.name;
      break;
    case "udp":
      base.type = "udp";
      break;
    default:
      base.type = "tcp"; // names come from the DNS cache, not from the logged host
  }
  return { connection: base, mitm: false };
}

/** cli.md §analyze step 4, plus the process fields. */
export function dedupKey(e: LogEvent): string {
  let target: unknown[];
  if ((e.type === "http" || e.type === "https") && e.url !== undefined) {
    target = [e.type, (e.method ?? "GET").toUpperCase(), stripQuery(e.url)];
  } else if (e.type === "https" || e.type === "http") target = [e.type, e.host ?? e.dst_ip, e.dst_port];
  else if (e.type === "dns") target = [e.type, e.name, e.dst_ip, e.dst_port];
  else if (e.type === "tcp") target = [e.type, e.host ?? e.dst_ip, e.dst_port];
  else target = [e.type, e.dst_ip, e.dst_port];
  return JSON.stringify([...target, ...PROCESS_FIELDS.map((k) => e[k] ?? null)]);
}

function destinationOf(e: LogEvent): string {
  if (e.url !== undefined) return `${(e.method ?? "GET").toUpperCase()} ${stripQuery(e.url)}`;
  switch (e.type) {
    case "dns":
      return `dns ${e.name} via ${e.dst_ip}:${e.dst_port}`;
    case "udp":
      return `udp ${e.dst_ip}:${e.dst_port}`;
    case "tcp":
      // The logged name is what the daemon's cache said; the replay judges the IP, so show both.
      return typeof e.host === "string" && e.host !== ""
        ? `tcp ${e.host}:${e.dst_port} (${e.dst_ip})`
        : `tcp ${e.dst_ip}:${e.dst_port}`;
    default:
      return `${e.type} ${typeof e.host === "string" && e.host !== "" ? e.host : e.dst_ip}:${e.dst_port}`;
  }
}

function processOf(e: LogEvent): Finding["process"] {
  const out: Record<string, unknown> = {};
  for (const key of PROCESS_FIELDS) if (e[key] !== undefined) out[key] = e[key];
  return out as Finding["process"];
}

function stripQuery(url: string): string {
  const cut = url.search(/[?#]/);
  return cut === -1 ? url : url.slice(0, cut);
}

/**
 * The URL host as the enforcer reads it (policy.md §10.1: lower-case, one trailing dot removed, no
 * IDNA conversion), so that the cache holds exactly the names the rules are matched against.
 */
function urlHost(url: string): string | undefined {
  return parseEventUrl(url)?.host;
}
