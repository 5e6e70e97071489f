// Line handling of policy text exactly as policy.md §1 defines it, so that the CLI can map
// issue and rule line numbers back to text (workflow positions, concatenated policies, the
// source text of a matched rule). Pure: no Deno API.

// \r\n first so that it counts as one terminator. The control characters are the spec's terminators.
// deno-lint-ignore no-control-regex
const TERMINATOR = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/g;

export type PolicyLine = {
  text: string; /** UTF-16 offset of the line start in the input. */
  offset: number;
};

/** Splits policy text into lines; a final terminator opens no new line; a leading BOM is skipped. */
export function splitPolicyLines(text: string): PolicyLine[] {
  const lines: PolicyLine[] = [];
  let start = text.startsWith("\uFEFF") ? 1 : 0;
  TERMINATOR.lastIndex = start;
  for (let m = TERMINATOR.exec(text); m !== null; m = TERMINATOR.exec(text)) {
    lines.push({ text: text.slice(start, m.index), offset: start });
    start = m.index + m[0].length;
  }
  if (start < text.length) lines.push({ text: text.slice(start), offset: start });
  return lines;
}

/** A rule's source line as the connection log shows it: trimmed, inline comment removed. */
export function ruleSourceText(line: string): string {
  // An inline comment needs whitespace before `#`; backtick and double-quoted values may hold `#`.
  let quote: string | undefined;
  const chars = Array.from(line);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
      continue;
    }
    if ((c === "`" || c === '"') && i > 0 && chars[i - 1] === "=") {
      quote = c;
      continue;
    }
    if (c === "#" && (i === 0 || chars[i - 1] === " " || chars[i - 1] === "\t")) {
      return chars.slice(0, i).join("").trim();
    }
  }
  return line.trim();
}

/** Number of Unicode code points in `s` (policy columns count code points). */
export function codePointLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
