// Issue formatting for the command line: `file:line:column: error: message`, then the
// offending line and a caret under the column. Pure: no Deno API.

export type Severity = "error" | "warning";

export type IssueReport = {
  file: string;
  severity: Severity;
  message: string;
  /** 1-based; 0 or absent when the issue has no line (cross-rule warnings). */
  line?: number;
  /** 1-based, in code points; 0 or absent when there is no column. */
  column?: number;
  /** Appended after the message, e.g. `(policy line 3)`. */
  suffix?: string;
  /** The line to echo under the message; the caret is drawn only when a column is known. */
  source?: string;
  /** Caret column in `source` when it differs from `column` (a policy line echoed from a quoted scalar). */
  caretColumn?: number;
};

/** Caret line for `column` (1-based, code points) of `source`; a TAB stays a TAB so it lines up. */
export function caretLine(source: string, column: number): string {
  const chars = Array.from(source);
  let pad = "";
  for (let i = 0; i < column - 1; i++) pad += chars[i] === "\t" ? "\t" : " ";
  return pad + "^";
}

/** Formats one issue as one to three lines (without a final newline). */
export function formatIssue(issue: IssueReport): string {
  let location = issue.file;
  if (issue.line !== undefined && issue.line > 0) {
    location += `:${issue.line}`;
    if (issue.column !== undefined && issue.column > 0) location += `:${issue.column}`;
  }
  let head = `${location}: ${issue.severity}: ${issue.message}`;
  if (issue.suffix) head += ` ${issue.suffix}`;
  const out = [head];
  if (issue.source !== undefined) {
    out.push(issue.source);
    const caret = issue.caretColumn ?? issue.column;
    if (caret !== undefined && caret > 0) out.push(caretLine(issue.source, caret));
  }
  return out.join("\n");
}
