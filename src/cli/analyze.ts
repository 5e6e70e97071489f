// `egress analyze` (cli.md §analyze): replay a connection log against a policy in enforce mode
// and list what it would block, allow and what failed, deduplicated.

import { DnsCache, Enforcer, parsePolicy, PolicyError, validatePolicy } from "../policy/mod.ts";
import { ruleSourceText as policyRuleText } from "../policy/policy.ts";
import type { Policy } from "../policy/policy.ts";
import type { ConnectionEvent, Decision, PolicyIssue } from "../policy/types.ts";
import { CliError, parseArgs, UsageError } from "./args.ts";
import { readConnectionLog } from "./connection_log.ts";
import type { LogEntry, LogEvent } from "./connection_log.ts";
import { splitPolicyLines } from "./policy_text.ts";
import { formatIssue } from "./report.ts";
import { resolveRepository } from "./repository.ts";
import { libraryOptions, loadPolicyFile, sourceIssue } from "./sources.ts";
import type { PolicySource } from "./sources.ts";

export const ANALYZE_USAGE = `Usage: egress analyze [POLICY|WORKFLOW] --log FILE [options]

Replays a connection log against a policy in enforce mode and lists the unique connections it
blocks (and with -v allows), and those that failed. A workflow's egress policies are used
together. Without POLICY only the built-in rules apply. "-" reads the policy from stdin.

Options:
  --log FILE           connection log (JSON Lines) to replay (required)
  -v, --verbose        also list allowed connections with the rule that allowed them
  --json               print the result as JSON
  --repo OWNER/REPO    repository for {owner}/{repo} (default: git origin, else owner/repo)
  --no-defaults        without the built-in runner rules (user rules keep the runner cgroup)
  --no-runner-cgroup   user rules without the implicit runner cgroup
  --action OWNER/REPO  also take policies of workflow steps that use this action
  -h, --help           this help

Exit: 0 nothing blocked, 1 something blocked or policy errors, 2 usage or unreadable file.`;

const FLAGS = {
  log: { kind: "string" },
  verbose: { kind: "boolean", short: "v" },
  json: { kind: "boolean" },
  repo: { kind: "string" },
  "no-defaults": { kind: "boolean" },
  "no-runner-cgroup": { kind: "boolean" },
  action: { kind: "string" },
  help: { kind: "boolean", short: "h" },
} as const;

/** Never expires: a log replay has no clock, every recorded resolution stays valid. */
const FOREVER_SECONDS = 100 * 365 * 24 * 3600;

const PROCESS_FIELDS = ["exe", "cgroup", "image", "step", "action", "cmdline"] as const;

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

/** Where each line of the combined policy text came from. */
type LineOrigin = { source: number; line: number } | undefined;

type CombinedPolicy = { text: string; origins: LineOrigin[] };

export async function runAnalyze(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(ANALYZE_USAGE);
    return 0;
  }
  if (flags.log === undefined) throw new UsageError("--log FILE is required");
  if (positionals.length > 1) {
    throw new UsageError(`expected at most one POLICY or WORKFLOW, got ${positionals.length}`);
  }
  if (positionals[0] === "-" && flags.log === "-") {
    throw new UsageError("policy and log cannot both be stdin");
  }

  let sources: PolicySource[] = [];
  if (positionals.length === 1) {
    const loaded = await loadPolicyFile(positionals[0], { action: flags.action });
    sources = loaded.sources;
    if (loaded.kind === "workflow" && sources.length === 0) {
      console.error(`egress analyze: note: ${loaded.file} has no egress policy: only built-in rules apply`);
    }
    for (const problem of loaded.problems) {
      console.error(
        `${loaded.file}:${problem.line}:${problem.column}: error: ${problem.message} (${problem.label})`,
      );
    }
    if (loaded.problems.length > 0) {
      throw new CliError(`Cannot analyze: ${loaded.file} has invalid egress steps`, 1);
    }
  }
  const log = await readConnectionLog(flags.log);

  const needsRepository = flags.repo !== undefined || sources.some((s) => /\{owner\}|\{repo\}/.test(s.text));
  let repository: string | undefined;
  if (needsRepository) {
    const resolved = await resolveRepository(flags.repo);
    if (resolved.warning !== undefined) console.error(`egress analyze: warning: ${resolved.warning}`);
    repository = resolved.repository;
  }
  const options = libraryOptions(
    { noDefaults: flags["no-defaults"], noRunnerCgroup: flags["no-runner-cgroup"] },
    repository,
  );

  // 1. Policy errors to stderr; the valid lines are used.
  let policyErrors = 0;
  const cleanTexts: string[] = [];
  for (const source of sources) {
    const { errors } = validatePolicy(source.text, options);
    policyErrors += errors.length;
    for (const issue of errors) console.error(formatIssue(sourceIssue(source, issue, "error")));
    cleanTexts.push(withoutLines(source.text, errors));
  }
  const combined = combinePolicies(cleanTexts);
  let policy;
  try {
    policy = parsePolicy(combined.text, options);
  } catch (e) {
    // The erroneous lines were removed; any error left is the library disagreeing with itself.
    if (e instanceof PolicyError) {
      throw new Error(`policy still invalid after removing bad lines: ${e.message}`);
    }
    throw e;
  }

  // 2. Bad log lines are reported and skipped.
  for (const problem of log.problems) {
    console.error(`${flags.log}:${problem.lineNumber}: warning: skipped line: ${problem.reason}`);
  }

  const findings = replay(log.entries, policy, (index) => describeRule(policy, index, combined, sources));
  const blocked = findings.filter((f) => f.status === "blocked");
  const allowed = findings.filter((f) => f.status === "allowed");
  const failed = findings.filter((f) => f.status === "failed");
  const summary = {
    unique: findings.length,
    allowed: allowed.length,
    blocked: blocked.length,
    failed: failed.length,
  };

  if (flags.json) {
    console.log(JSON.stringify({
      blocked,
      allowed,
      failed,
      skipped: log.problems.map((p) => ({ line: p.lineNumber, reason: p.reason })),
      policy_errors: policyErrors,
      summary,
    }));
  } else {
    if (log.entries.length === 0) console.log("note: the log holds no connections");
    printSection("BLOCKED", blocked);
    if (flags.verbose) printSection("ALLOWED", allowed);
    printSection("FAILED", failed);
    console.log(
      `${summary.unique} unique: ${summary.allowed} allowed, ${summary.blocked} blocked, ${summary.failed} failed`,
    );
  }
  return blocked.length > 0 || policyErrors > 0 ? 1 : 0;
}

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
  const cache = new DnsCache({
    capacity: 1_000_000,
    minTtl: FOREVER_SECONDS,
    maxTtl: FOREVER_SECONDS,
    now: () => 0,
  });
  for (const { event } of entries) feedCache(cache, event);
  const enforcer = new Enforcer(policy, { dnsCache: cache });

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

/** dns_response answers, and certificate-verified request lines (dst_ip ↔ URL host). */
function feedCache(cache: DnsCache, event: LogEvent) {
  if (event.type === "dns_response" && event.name !== undefined && event.answers !== undefined) {
    if (event.answers.length > 0) cache.add(event.name, event.answers, FOREVER_SECONDS);
    return;
  }
  if (
    event.type === "https" && event.url !== undefined && event.insecure !== true &&
    event.error === undefined &&
    event.dst_ip !== undefined
  ) {
    const host = urlHost(event.url);
    if (host !== undefined && !/^\d+\.\d+\.\d+\.\d+$/.test(host) && !host.startsWith("[")) {
      cache.add(host, [event.dst_ip], FOREVER_SECONDS);
    }
  }
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

function urlHost(url: string): string | undefined {
  try {
    const host = new URL(url).hostname.toLowerCase();
    return host.endsWith(".") ? host.slice(0, -1) : host;
  } catch {
    return undefined;
  }
}

/** The policy text with the lines that have errors blanked (line numbers are kept). */
function withoutLines(text: string, errors: PolicyIssue[]): string {
  const bad = new Set(errors.map((e) => e.line));
  return splitPolicyLines(text).map((l, i) => bad.has(i + 1) ? "" : l.text).join("\n");
}

/** Joins policies; `[]` between them resets the header context so none leaks into the next. */
function combinePolicies(texts: string[]): CombinedPolicy {
  const lines: string[] = [];
  const origins: LineOrigin[] = [];
  texts.forEach((text, source) => {
    if (source > 0) {
      lines.push("[]");
      origins.push(undefined);
    }
    splitPolicyLines(text).forEach((l, i) => {
      lines.push(l.text);
      origins.push({ source, line: i + 1 });
    });
  });
  return { text: lines.join("\n"), origins };
}

function describeRule(
  policy: Policy,
  index: number,
  combined: CombinedPolicy,
  sources: PolicySource[],
): { rule: string; line: number; location?: string } {
  const rule = policyRuleText(policy, index);
  const combinedLine = policy.rules[index].line;
  const origin = combinedLine === 0 ? undefined : combined.origins[combinedLine - 1];
  if (origin === undefined) return { rule, line: combinedLine };
  const location = sources[origin.source]?.location ?? null;
  return { rule, line: origin.line, ...(location !== null ? { location } : {}) };
}

function printSection(title: string, findings: Finding[]) {
  if (findings.length === 0) return;
  console.log(`${title} (${findings.length})`);
  for (const f of findings) {
    const context = formatProcess(f.process);
    let verdict: string;
    if (f.status === "allowed") {
      verdict = `line ${f.rule_line}: ${f.rule}${
        f.rule_location !== undefined ? ` [${f.rule_location}]` : ""
      }`;
    } else verdict = f.reason ?? "";
    console.log(`  ${f.destination}${context ? `  ${context}` : ""}  ×${f.count}  ${verdict}`);
  }
}

function formatProcess(p: Finding["process"]): string {
  const parts: string[] = [];
  for (const key of PROCESS_FIELDS) {
    const v = p[key];
    if (v === undefined) continue;
    parts.push(key === "cmdline" ? `cmdline=${JSON.stringify((v as string[]).join(" "))}` : `${key}=${v}`);
  }
  return parts.join(" ");
}
