// Extracts egress policies from GitHub workflow YAML, keeping where each policy sits in the file
// so that issues can point at the real line and column. Pure: no Deno API.

import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Document, Node, Scalar, YAMLMap } from "yaml";
import { codePointLength, splitPolicyLines } from "./policy_text.ts";

/**
 * Where a policy's text lives in the YAML file.
 * - `block`: a literal block scalar (`|`, `|-`, `|+`, with or without an indentation indicator):
 *   policy positions map to real file positions.
 * - `scalar`: any other style (plain, quoted, folded): only the scalar's start is known.
 */
export type PolicyPlacement =
  | {
    style: "block"; /** 1-based line of the `|` header. */
    headerLine: number; /** content indent, code points */
    indent: number;
  }
  | { style: "scalar"; line: number; column: number };

export type WorkflowPolicy = {
  /** `jobs.<job>.steps[<i>] (<name or "step i">)` */
  label: string;
  job: string;
  step: number;
  text: string;
  placement: PolicyPlacement;
};

/** A problem in the workflow itself (not in a policy), e.g. a policy that is not a string. */
export type WorkflowProblem = { label: string; line: number; column: number; message: string };

export type YamlSyntaxError = { line: number; column: number; message: string };

export type WorkflowInspection =
  | { kind: "invalid-yaml"; error: YamlSyntaxError }
  | { kind: "not-workflow" }
  | { kind: "workflow"; policies: WorkflowPolicy[]; problems: WorkflowProblem[] };

export type ExtractOptions = {
  /** `OWNER/REPO` of the action to look for besides any `…/egress`. */
  action?: string;
};

/** File position of a policy position, plus the policy line when only the scalar start is known. */
export type FilePosition = { line: number; column: number; policyLine?: number };

/** True when `uses` (without `@ref`) names the egress action. */
export function usesEgress(uses: string, action?: string): boolean {
  const at = uses.indexOf("@");
  const name = (at === -1 ? uses : uses.slice(0, at)).trim().toLowerCase();
  if (name.endsWith("/egress")) return true;
  return action !== undefined && action !== "" && name === action.trim().toLowerCase();
}

/**
 * Parses `source` as YAML and, if it is a workflow (a mapping with a `jobs` mapping), returns the
 * non-empty `with.policy` of every step that uses the egress action.
 */
export function inspectWorkflow(source: string, options: ExtractOptions = {}): WorkflowInspection {
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0];
    const pos = lineCounter.linePos(err.pos[0]);
    return {
      kind: "invalid-yaml",
      error: { line: pos.line, column: pos.col, message: firstLine(err.message) },
    };
  }
  const root = doc.contents;
  if (!isMap(root)) return { kind: "not-workflow" };
  const jobs = resolve(doc, root.get("jobs", true));
  if (!isMap(jobs)) return { kind: "not-workflow" };

  const policies: WorkflowPolicy[] = [];
  const problems: WorkflowProblem[] = [];
  for (const jobPair of jobs.items) {
    const job = scalarString(doc, jobPair.key as Node | null) ?? "?";
    const jobNode = resolve(doc, jobPair.value as Node | null);
    if (!isMap(jobNode)) continue;
    const steps = resolve(doc, jobNode.get("steps", true));
    if (!isSeq(steps)) continue;
    steps.items.forEach((item, index) => {
      const step = resolve(doc, item as Node | null);
      if (!isMap(step)) return;
      const uses = scalarString(doc, step.get("uses", true));
      if (uses === undefined || !usesEgress(uses, options.action)) return;
      const name = scalarString(doc, step.get("name", true));
      const label = `jobs.${job}.steps[${index}] (${name ?? `step ${index}`})`;
      const withNode = resolve(doc, step.get("with", true));
      if (!isMap(withNode)) return;
      const policyNode = resolve(doc, (withNode as YAMLMap).get("policy", true));
      if (policyNode === undefined) return;
      if (!isScalar(policyNode) || (policyNode.value !== null && typeof policyNode.value !== "string")) {
        const at = lineCounter.linePos(policyNode.range?.[0] ?? 0);
        problems.push({ label, line: at.line, column: at.col, message: "with.policy must be a string" });
        return;
      }
      const text = typeof policyNode.value === "string" ? policyNode.value : "";
      if (text.trim() === "") return;
      policies.push({
        label,
        job,
        step: index,
        text,
        placement: placementOf(policyNode, source, lineCounter),
      });
    });
  }
  return { kind: "workflow", policies, problems };
}

/** Maps (policy line, policy column) to the YAML file; column 0 stays 0 (no column). */
export function mapPolicyPosition(policy: WorkflowPolicy, line: number, column: number): FilePosition {
  const placement = policy.placement;
  if (placement.style === "scalar" || line < 1) {
    const start = placement.style === "scalar" ? placement : { line: placement.headerLine, column: 1 };
    return { line: start.line, column: start.column, policyLine: line >= 1 ? line : undefined };
  }
  // Policy lines may end at terminators YAML does not break on (\v, \u2028, …): count the
  // newlines of the scalar value before the policy line's start instead of assuming 1:1.
  const lines = splitPolicyLines(policy.text);
  const target = lines[line - 1];
  if (target === undefined) return { line: placement.headerLine, column: 1, policyLine: line };
  const before = policy.text.slice(0, target.offset);
  const newlines = before.split("\n").length - 1;
  const lastNewline = before.lastIndexOf("\n");
  const inLine = codePointLength(before.slice(lastNewline + 1));
  return {
    line: placement.headerLine + 1 + newlines,
    column: column > 0 ? placement.indent + inLine + column : 0,
  };
}

function placementOf(node: Scalar, source: string, lineCounter: LineCounter): PolicyPlacement {
  const start = node.range?.[0] ?? 0;
  const pos = lineCounter.linePos(start);
  if (node.type === "BLOCK_LITERAL" && typeof node.value === "string") {
    const indent = blockIndent(node.value, source, pos.line);
    if (indent !== undefined) return { style: "block", headerLine: pos.line, indent };
  }
  return { style: "scalar", line: pos.line, column: pos.col };
}

/**
 * Content indentation of a literal block scalar, measured on the file: a content line is the
 * indentation followed by the value's line verbatim. Undefined if the file does not agree
 * (then the caller falls back to the scalar start).
 */
function blockIndent(value: string, source: string, headerLine: number): number | undefined {
  const fileLines = source.split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
  const valueLines = value.split("\n");
  let indent: number | undefined;
  for (let i = 0; i < valueLines.length; i++) {
    const v = valueLines[i];
    if (v === "") continue;
    const f = fileLines[headerLine + i]; // header is 1-based line headerLine => index headerLine is next
    if (f === undefined || !f.endsWith(v)) return undefined;
    const lead = f.slice(0, f.length - v.length);
    if (!/^ *$/.test(lead)) return undefined;
    const n = lead.length;
    if (indent === undefined) indent = n;
    else if (indent !== n) return undefined;
  }
  return indent ?? 0;
}

function resolve(doc: Document, node: unknown): Node | undefined {
  if (node === null || node === undefined) return undefined;
  if (isAlias(node)) return (node.resolve(doc) as Node | undefined) ?? undefined;
  return node as Node;
}

function scalarString(doc: Document, node: unknown): string | undefined {
  const n = resolve(doc, node);
  if (!isScalar(n) || n.value === null || n.value === undefined) return undefined;
  return String(n.value);
}

function firstLine(message: string): string {
  return message.split("\n")[0].trim();
}
