// Reading `iptables-save` output (pure: no Deno API). Used to verify our rules, to find the jumps
// to delete and to detect chains a crashed daemon left behind.

export interface SavedRule {
  chain: string;
  /** Rule text after `-A <chain> `, as printed. */
  spec: string;
  /** `spec` split like a shell would (double quotes removed). */
  tokens: string[];
}

export interface SavedTable {
  name: string;
  /** Declared chains in order, built-in and user-defined. */
  chains: string[];
  rules: SavedRule[];
}

/**
 * Splits a rule the way iptables-restore does: on blanks, with double-quoted words kept whole and
 * the quotes removed. A backslash escapes the next character.
 */
export function tokenizeRule(spec: string): string[] {
  const tokens: string[] = [];
  let current = "";
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < spec.length; i++) {
    const char = spec[i];
    if (char === "\\" && i + 1 < spec.length) {
      current += spec[++i];
      inToken = true;
    } else if (char === '"') {
      quoted = !quoted;
      inToken = true;
    } else if (!quoted && (char === " " || char === "\t")) {
      if (inToken) tokens.push(current);
      current = "";
      inToken = false;
    } else {
      current += char;
      inToken = true;
    }
  }
  if (quoted) throw new Error(`Cannot read the iptables rule ${JSON.stringify(spec)}: unbalanced quote`);
  if (inToken) tokens.push(current);
  return tokens;
}

/** Parses `iptables-save` text into tables; comments and counters are ignored. */
export function parseIptablesSave(text: string): SavedTable[] {
  const tables: SavedTable[] = [];
  let table: SavedTable | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("*")) {
      table = { name: line.slice(1), chains: [], rules: [] };
      tables.push(table);
    } else if (line === "COMMIT") {
      table = undefined;
    } else if (table && line.startsWith(":")) {
      table.chains.push(line.slice(1).split(" ")[0]);
    } else if (table && line.startsWith("-A ")) {
      // Counters (`-c`, `[p:b]`) only appear with iptables-save -c, which we never pass.
      const rest = line.slice(3);
      const space = rest.indexOf(" ");
      const chain = space < 0 ? rest : rest.slice(0, space);
      const spec = space < 0 ? "" : rest.slice(space + 1).trim();
      table.rules.push({ chain, spec, tokens: tokenizeRule(spec) });
    }
  }
  return tables;
}

/** The chain a rule jumps or goes to (`-j X` / `-g X`), if any. */
export function ruleTarget(rule: SavedRule): string | undefined {
  for (let i = rule.tokens.length - 2; i >= 0; i--) {
    if (rule.tokens[i] === "-j" || rule.tokens[i] === "-g") return rule.tokens[i + 1];
  }
  return undefined;
}

/** Same rule text after tokenizing both (quotes and spacing do not count). */
export function sameRule(a: string, b: string): boolean {
  const left = tokenizeRule(a);
  const right = tokenizeRule(b);
  return left.length === right.length && left.every((token, i) => token === right[i]);
}

/**
 * `iptables-save` text made comparable: comment lines dropped, chain counters zeroed. Two states
 * of a netns are the same when this is equal.
 */
export function normalizeSave(text: string): string {
  return text.split("\n")
    .filter((line) => !line.startsWith("#"))
    .map((line) => line.startsWith(":") ? line.replace(/\[\d+:\d+\]$/, "[0:0]") : line)
    .join("\n");
}
