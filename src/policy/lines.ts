// Line splitting for policy text (policy.md §1). Pure: no Deno, no node:.

/**
 * One source line: its 1-based number, its text without the terminator, and the UTF-16 offset
 * of its first character in the whole text (the CLI maps policy lines back into YAML files).
 */
export type SourceLine = { number: number; text: string; offset: number };

// Every terminator of §1. "\r\n" comes first so that it counts as one break, not two.
// deno-lint-ignore no-control-regex
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/g;

/**
 * Splits policy text into lines. A leading BOM is dropped and a final terminator does not open a
 * new (empty) line, so "a\n" is one line and "" is none.
 */
export function splitLines(text: string): SourceLine[] {
  const lines: SourceLine[] = [];
  let start = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  LINE_BREAK.lastIndex = start;
  for (let m = LINE_BREAK.exec(text); m !== null; m = LINE_BREAK.exec(text)) {
    lines.push({ number: lines.length + 1, text: text.slice(start, m.index), offset: start });
    start = m.index + m[0].length;
  }
  if (start < text.length) lines.push({ number: lines.length + 1, text: text.slice(start), offset: start });
  return lines;
}

/**
 * 1-based column, in code points, of the UTF-16 offset `index` of `line` (a TAB is one column).
 * An offset inside a surrogate pair counts as the pair's column.
 */
export function columnAt(line: string, index: number): number {
  let column = 1;
  for (let i = 0; i < index && i < line.length; i++) {
    const code = line.charCodeAt(i);
    // A high surrogate followed by a low one is a single code point.
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < line.length) {
      const low = line.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        if (i + 1 >= index) break;
        i++;
      }
    }
    column++;
  }
  return column;
}
