// `egress validate` (cli.md §validate): check policy files and the egress policies of workflows.

import { validatePolicy } from "../policy/mod.ts";
import type { PolicyIssue, PolicyOptions, Rule } from "../policy/types.ts";
import { parseArgs, UsageError } from "./args.ts";
import { formatIssue } from "./report.ts";
import { resolveRepository } from "./repository.ts";
import {
  defaultWorkflowFiles,
  libraryOptions,
  loadPolicyFile,
  problemIssue,
  sourceIssue,
} from "./sources.ts";
import type { LoadedFile, PolicySource } from "./sources.ts";

export const VALIDATE_USAGE = `Usage: egress validate [FILE…] [options]

Checks policy files and the egress policies of GitHub workflows. FILE is a workflow
(.yml/.yaml with "jobs") or a plain policy file; "-" reads a policy from stdin.
Without FILE: .github/workflows/*.y*ml.

Options:
  --repo OWNER/REPO    repository for {owner}/{repo} (default: git origin, else owner/repo)
  --no-defaults        without the built-in runner rules (user rules keep the runner cgroup)
  --no-runner-cgroup   user rules without the implicit runner cgroup
  --action OWNER/REPO  also take policies of steps that use this action
  --dump-rules         print all rules (built-ins first) as JSON
  --json               print the result as JSON
  -q, --quiet          print errors only
  -h, --help           this help

Exit: 0 valid (warnings allowed), 1 errors, 2 usage or unreadable file / invalid YAML.`;

const FLAGS = {
  repo: { kind: "string" },
  "no-defaults": { kind: "boolean" },
  "no-runner-cgroup": { kind: "boolean" },
  action: { kind: "string" },
  "dump-rules": { kind: "boolean" },
  json: { kind: "boolean" },
  quiet: { kind: "boolean", short: "q" },
  help: { kind: "boolean", short: "h" },
} as const;

type Checked = {
  source: PolicySource;
  rules: Rule[];
  errors: PolicyIssue[];
  warnings: PolicyIssue[];
};

export async function runValidate(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(VALIDATE_USAGE);
    return 0;
  }
  if (flags.json && flags["dump-rules"]) throw new UsageError("--json and --dump-rules cannot be combined");
  if (positionals.filter((p) => p === "-").length > 1) {
    throw new UsageError('stdin ("-") can be given only once');
  }

  const paths = positionals.length > 0 ? positionals : await defaultWorkflowFiles();
  // Read everything first: a missing file or invalid YAML stops before any output.
  const loaded: LoadedFile[] = [];
  for (const path of paths) loaded.push(await loadPolicyFile(path, { action: flags.action }));

  const sources = loaded.flatMap((f) => f.sources);
  const repository = await repositoryFor(sources, flags.repo, flags.quiet);
  const options = libraryOptions(
    { noDefaults: flags["no-defaults"], noRunnerCgroup: flags["no-runner-cgroup"] },
    repository,
  );

  const checked: Checked[] = sources.map((source) => ({ source, ...validatePolicy(source.text, options) }));
  const problemCount = loaded.reduce((n, f) => n + f.problems.length, 0);
  const errorCount = checked.reduce((n, c) => n + c.errors.length, 0) + problemCount;

  if (flags.json) {
    console.log(JSON.stringify(jsonResult(loaded, checked, flags.quiet)));
  } else if (flags["dump-rules"]) {
    printIssues(loaded, checked, true, console.error);
    console.log(JSON.stringify(allRules(checked, options), null, 2));
  } else {
    printIssues(loaded, checked, flags.quiet, console.log);
    if (!flags.quiet) printSummaries(loaded, checked);
  }
  return errorCount > 0 ? 1 : 0;
}

/** Resolves the repository only when it matters: `--repo` given or a placeholder used. */
async function repositoryFor(sources: PolicySource[], flag: string | undefined, quiet: boolean) {
  const needed = flag !== undefined || sources.some((s) => /\{owner\}|\{repo\}/.test(s.text));
  if (!needed) return undefined;
  const resolved = await resolveRepository(flag);
  if (resolved.warning !== undefined && !quiet) {
    console.error(`egress validate: warning: ${resolved.warning}`);
  }
  return resolved.repository;
}

function printIssues(loaded: LoadedFile[], checked: Checked[], quiet: boolean, print: (s: string) => void) {
  for (const file of loaded) {
    for (const problem of file.problems) print(formatIssue(problemIssue(file.file, problem)));
  }
  for (const c of checked) {
    for (const issue of c.errors) print(formatIssue(sourceIssue(c.source, issue, "error")));
    if (quiet) continue;
    for (const issue of c.warnings) print(formatIssue(sourceIssue(c.source, issue, "warning")));
  }
}

function printSummaries(loaded: LoadedFile[], checked: Checked[]) {
  for (const file of loaded) {
    if (file.kind === "workflow" && file.sources.length === 0) {
      console.log(`${file.file}: note: no egress policy found`);
    }
  }
  for (const c of checked) {
    const name = c.source.location === null ? c.source.file : `${c.source.file}: ${c.source.location}`;
    const builtIn = c.rules.filter((r) => r.line === 0).length;
    const rules = builtIn > 0 ? `${c.rules.length} rules (${builtIn} built-in)` : `${c.rules.length} rules`;
    const verdict = c.errors.length === 0 ? "OK" : plural(c.errors.length, "error");
    const warnings = c.warnings.length > 0 ? `, ${plural(c.warnings.length, "warning")}` : "";
    console.log(`${name}: ${rules}, ${verdict}${warnings}`);
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function jsonResult(loaded: LoadedFile[], checked: Checked[], quiet: boolean) {
  const files: unknown[] = [];
  for (const file of loaded) {
    for (const problem of file.problems) {
      // Not a policy issue: line/column are positions in the workflow file.
      files.push({
        file: file.file,
        location: problem.label,
        rules: 0,
        errors: [{ line: problem.line, column: problem.column, message: problem.message, text: "" }],
        warnings: [],
      });
    }
  }
  for (const c of checked) {
    files.push({
      file: c.source.file,
      location: c.source.location,
      rules: c.rules.length,
      errors: c.errors,
      warnings: quiet ? [] : c.warnings,
    });
  }
  return { files };
}

/** Built-in rules once (they are the same in every policy), then each policy's own rules. */
function allRules(checked: Checked[], options: PolicyOptions): Rule[] {
  const builtIns = (checked[0]?.rules ?? validatePolicy("", options).rules).filter((r) => r.line === 0);
  return [...builtIns, ...checked.flatMap((c) => c.rules.filter((r) => r.line !== 0))];
}
