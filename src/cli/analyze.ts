// `egress analyze` (cli.md §analyze): replay a connection log against a policy in enforce mode
// and list what it would block, allow and what failed, deduplicated.

import { parsePolicy, PolicyError, validatePolicy } from "../policy/mod.ts";
import { ruleSourceText as policyRuleText } from "../policy/policy.ts";
import type { Policy } from "../policy/policy.ts";
import type { PolicyIssue } from "../policy/types.ts";
import { libraryOptions, PROCESS_FIELDS, replay } from "../tools/replay.ts";
import type { Finding } from "../tools/replay.ts";
import { CliError, parseArgs, UsageError } from "./args.ts";
import { readConnectionLog } from "./connection_log.ts";
import { splitPolicyLines } from "./policy_text.ts";
import { formatIssue } from "./report.ts";
import { resolveRepository } from "./repository.ts";
import { loadPolicyFile, sourceIssue } from "./sources.ts";
import type { PolicySource } from "./sources.ts";

// The replay itself is pure and shared with `egress suggest`.
export { dedupKey, replay, toConnectionEvent } from "../tools/replay.ts";
export type { Finding, Status } from "../tools/replay.ts";

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
    console.log(printable(`  ${f.destination}${context ? `  ${context}` : ""}  ×${f.count}  ${verdict}`));
  }
}

// Control characters, line and paragraph separators and bidi overrides. Log fields (exe paths,
// DNS names, URLs) come from the workload: raw, they could forge rows or rewrite the terminal.
// deno-lint-ignore no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** The text with every unprintable character written as a `\uXXXX` escape. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
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
