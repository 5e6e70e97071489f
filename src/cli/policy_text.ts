// Policy-text helpers for the CLI, which maps issue and rule line numbers back to text (workflow
// positions, concatenated policies). Lines are split by the library's own splitter so that the
// CLI and the parser can never disagree on what line N is. Pure: no Deno API.
import { type SourceLine, splitLines } from "../policy/lines.ts";

export type PolicyLine = SourceLine;

/** Splits policy text into lines as policy.md §1 says (offsets are UTF-16, BOM skipped). */
export const splitPolicyLines: (text: string) => PolicyLine[] = splitLines;

/** Number of Unicode code points in `s` (policy columns count code points). */
export function codePointLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
