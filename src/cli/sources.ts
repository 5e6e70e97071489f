// Loading policy text for `validate` and `analyze`: a plain policy file, stdin, or the egress
// policies of a workflow, plus the library options the shared flags select and the mapping of
// issue positions back to the file.

import { RUNNER_CGROUP } from "../policy/builtins.ts";
import type { PolicyIssue } from "../policy/types.ts";
import { libraryOptions } from "../tools/replay.ts";
import { CliError } from "./args.ts";
import { describeFsError, readUtf8 } from "./connection_log.ts";
import type { IssueReport, Severity } from "./report.ts";
import { inspectWorkflow, mapPolicyPosition } from "./workflow.ts";
import type { WorkflowPolicy, WorkflowProblem } from "./workflow.ts";

/** The runner's cgroup (policy.md §12): the default attribute of user rules under `runner: true`. */
export { RUNNER_CGROUP };

/** `{runner: true}` by default; the flags as cli.md §validate says (pure, shared with suggest). */
export { libraryOptions };

/** One policy to validate or apply. */
export type PolicySource = {
  file: string;
  /** Workflow step label; null for a plain policy file. */
  location: string | null;
  text: string;
  workflow?: WorkflowPolicy;
  /** Lines of the whole file (for echoing the offending line of a block scalar). */
  fileLines: string[];
};

export type LoadedFile = {
  file: string;
  kind: "policy" | "workflow";
  sources: PolicySource[];
  problems: WorkflowProblem[];
};

export const STDIN_NAME = "<stdin>";

export async function readInput(path: string): Promise<string> {
  try {
    return await readUtf8(path);
  } catch (e) {
    throw new CliError(`Cannot read ${path === "-" ? "stdin" : path}: ${describeFsError(e)}`, 2);
  }
}

/**
 * Reads `path` (`-` = stdin). A `.yml`/`.yaml` file whose document is a mapping with a `jobs`
 * mapping is a workflow, and one that is not valid YAML is an error (exit 2); anything else,
 * stdin included, is a plain policy file (cli.md: "`-` = stdin policy").
 */
export async function loadPolicyFile(path: string, options: { action?: string } = {}): Promise<LoadedFile> {
  const text = await readInput(path);
  const file = path === "-" ? STDIN_NAME : path;
  const fileLines = text.split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
  const plain: LoadedFile = {
    file,
    kind: "policy",
    sources: [{ file, location: null, text, fileLines }],
    problems: [],
  };
  if (path === "-" || !/\.ya?ml$/i.test(path)) return plain;
  const inspection = inspectWorkflow(text, options);
  if (inspection.kind === "invalid-yaml") {
    const e = inspection.error;
    throw new CliError(`Cannot parse ${file}:${e.line}:${e.column}: invalid YAML: ${e.message}`, 2);
  }
  if (inspection.kind !== "workflow") return plain;
  return {
    file,
    kind: "workflow",
    sources: inspection.policies.map((workflow) => ({
      file,
      location: workflow.label,
      text: workflow.text,
      workflow,
      fileLines,
    })),
    problems: inspection.problems,
  };
}

/** The workflow files `validate` checks when no FILE is given: `.github/workflows/*.y*ml`, sorted. */
export async function defaultWorkflowFiles(dir = ".github/workflows"): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if ((entry.isFile || entry.isSymlink) && /\.y[^.]*ml$/i.test(entry.name)) {
        files.push(`${dir}/${entry.name}`);
      }
    }
  } catch (e) {
    throw new CliError(`Cannot find workflows in ${dir}: ${describeFsError(e)}; name a FILE`, 2);
  }
  if (files.length === 0) throw new CliError(`Cannot find workflows: no ${dir}/*.y*ml; name a FILE`, 2);
  return files.sort();
}

/** An issue of a policy as a report at its file position (policy.md issue → cli.md output). */
export function sourceIssue(source: PolicySource, issue: PolicyIssue, severity: Severity): IssueReport {
  const base = { file: source.file, severity, message: issue.message };
  const wf = source.workflow;
  if (wf === undefined) {
    return { ...base, line: issue.line, column: issue.column, source: issue.text };
  }
  if (issue.line < 1) {
    const at = mapPolicyPosition(wf, 0, 0);
    // Cross-rule warning: no single line to point at; the message names the policy lines.
    return { ...base, line: at.line, column: at.column, suffix: `(${wf.label})` };
  }
  const at = mapPolicyPosition(wf, issue.line, issue.column);
  if (at.policyLine !== undefined) {
    return {
      ...base,
      line: at.line,
      column: at.column,
      suffix: `(policy line ${at.policyLine})`,
      source: issue.text,
      caretColumn: issue.column,
    };
  }
  // Block scalar: echo the real file line so the caret sits under the real column.
  const fileLine = source.fileLines[at.line - 1];
  return { ...base, line: at.line, column: at.column, source: fileLine ?? issue.text };
}

/** A workflow problem (not a policy issue) as an error report. */
export function problemIssue(file: string, problem: WorkflowProblem): IssueReport {
  return {
    file,
    severity: "error",
    message: `${problem.message}`,
    line: problem.line,
    column: problem.column,
    suffix: `(${problem.label})`,
  };
}
