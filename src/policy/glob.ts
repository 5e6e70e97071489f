// fnmatch-style globs for attribute values (policy.md §4) and `*`-only globs for hostname labels and
// URL path segments (§10.3, §10.4). Patterns are compiled into token lists once; no RegExp is built
// from user text, so pattern characters can never be interpreted as regex syntax.

type CharClass = { negated: boolean; singles: Set<number>; ranges: Array<[number, number]> };
type GlobToken =
  | { kind: "literal"; codePoint: number }
  | { kind: "any" } // `?`
  | { kind: "star" } // `*`
  | { kind: "class"; charClass: CharClass };

/** A compiled fnmatch pattern: whole-string, case-sensitive, `*` crosses `/`. */
export type Glob = { readonly pattern: string; matches(text: string): boolean };

function codePointsOf(text: string): number[] {
  const points: number[] = [];
  for (const char of text) points.push(char.codePointAt(0)!);
  return points;
}

const BANG = 0x21, DASH = 0x2d, STAR = 0x2a, QUESTION = 0x3f, OPEN = 0x5b, CLOSE = 0x5d;

/** Parses `[...]` starting at `start` (the `[`); returns undefined when no closing `]` exists. */
function parseClass(points: number[], start: number): { charClass: CharClass; next: number } | undefined {
  let i = start + 1;
  let negated = false;
  if (points[i] === BANG) {
    negated = true;
    i++;
  }
  const members: number[] = [];
  let first = true;
  // A `]` directly after `[` or `[!` is a member, not the end of the class.
  while (i < points.length && (first || points[i] !== CLOSE)) {
    members.push(points[i]);
    first = false;
    i++;
  }
  if (i >= points.length) return undefined;
  const singles = new Set<number>();
  const ranges: Array<[number, number]> = [];
  for (let m = 0; m < members.length; m++) {
    if (m + 2 < members.length && members[m + 1] === DASH) {
      ranges.push([members[m], members[m + 2]]);
      m += 2;
    } else {
      singles.add(members[m]);
    }
  }
  return { charClass: { negated, singles, ranges }, next: i + 1 };
}

function classAccepts(charClass: CharClass, point: number): boolean {
  let inside = charClass.singles.has(point);
  if (!inside) {
    for (const [low, high] of charClass.ranges) {
      if (point >= low && point <= high) {
        inside = true;
        break;
      }
    }
  }
  return inside !== charClass.negated;
}

function tokenize(pattern: string): GlobToken[] {
  const points = codePointsOf(pattern);
  const tokens: GlobToken[] = [];
  for (let i = 0; i < points.length;) {
    const point = points[i];
    if (point === STAR) {
      // Consecutive stars are equivalent to one.
      if (tokens.at(-1)?.kind !== "star") tokens.push({ kind: "star" });
      i++;
    } else if (point === QUESTION) {
      tokens.push({ kind: "any" });
      i++;
    } else if (point === OPEN) {
      const parsed = parseClass(points, i);
      if (parsed) {
        tokens.push({ kind: "class", charClass: parsed.charClass });
        i = parsed.next;
      } else {
        // An unclosed `[` is an ordinary character.
        tokens.push({ kind: "literal", codePoint: point });
        i++;
      }
    } else {
      tokens.push({ kind: "literal", codePoint: point });
      i++;
    }
  }
  return tokens;
}

function tokenAccepts(token: GlobToken, point: number): boolean {
  switch (token.kind) {
    case "literal":
      return token.codePoint === point;
    case "any":
      return true;
    case "class":
      return classAccepts(token.charClass, point);
    case "star":
      return false;
  }
}

// Greedy matching with backtracking to the most recent star: linear in practice, never exponential.
function matchTokens(tokens: GlobToken[], text: number[]): boolean {
  let t = 0, p = 0;
  let starToken = -1, starText = 0;
  while (p < text.length) {
    const token = tokens[t];
    if (token !== undefined && token.kind === "star") {
      starToken = t++;
      starText = p;
    } else if (token !== undefined && tokenAccepts(token, text[p])) {
      t++;
      p++;
    } else if (starToken >= 0) {
      t = starToken + 1;
      p = ++starText;
    } else {
      return false;
    }
  }
  while (t < tokens.length && tokens[t].kind === "star") t++;
  return t === tokens.length;
}

/** Compiles an fnmatch pattern once; `matches` is then cheap and never throws. */
export function compileGlob(pattern: string): Glob {
  const tokens = tokenize(pattern);
  const isPlain = tokens.every((token) => token.kind === "literal");
  if (isPlain) return { pattern, matches: (text) => text === pattern };
  return { pattern, matches: (text) => matchTokens(tokens, codePointsOf(text)) };
}

/** One-shot fnmatch (compiles each call; use `compileGlob` in hot paths). */
export function fnmatch(pattern: string, text: string): boolean {
  return compileGlob(pattern).matches(text);
}

/**
 * Matches a pattern in which only `*` is special (any run of characters, possibly empty) against a
 * single hostname label or URL path segment. Callers split on `.` or `/` first, so `*` never crosses
 * those separators.
 */
export function starMatches(pattern: string, text: string): boolean {
  if (!pattern.includes("*")) return pattern === text;
  const parts = pattern.split("*");
  const head = parts[0], tail = parts[parts.length - 1];
  if (text.length < head.length + tail.length) return false;
  if (!text.startsWith(head) || !text.endsWith(tail)) return false;
  let position = head.length;
  const end = text.length - tail.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i];
    if (part === "") continue;
    const found = text.indexOf(part, position);
    if (found < 0 || found + part.length > end) return false;
    position = found + part.length;
  }
  return true;
}
