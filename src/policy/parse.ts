// From policy text to flattened rules (policy.md §5–§9): placeholders, header context, defaults,
// flag rules, validation and cross-rule warnings. Pure: no Deno, no node:.

import { type AttrAst, type LineAst, parseLine, type RuleAst, type UrlAst } from "./grammar.ts";
import { hostPatternMatches, normalizeHostname } from "./hostname.ts";
import { columnAt, splitLines } from "./lines.ts";
import type { AttrValue, PolicyIssue, PolicyOptions, Rule } from "./types.ts";

/** Output of `parsePolicyText`: surviving rules with their source text, and all findings. */
export type ParsedPolicy = {
  rules: Rule[];
  /** Per rule: its source line, trimmed, inline comment removed. */
  sources: string[];
  errors: PolicyIssue[];
  warnings: PolicyIssue[];
};

/** Defaults after option checking (§8). */
export type ResolvedDefaults = {
  port: number[] | "*";
  protocol: "tcp" | "udp";
  methods: string[];
  attrs: Record<string, AttrValue>;
};

type Context = {
  port: number[] | "*";
  protocol: "tcp" | "udp";
  methods: string[] | null;
  urlBase: UrlAst | null;
  attrs: Record<string, AttrValue>;
  passthrough: boolean;
  insecure: boolean;
  /** Line of the header that set this context (0 = default context). */
  headerLine: number;
};

const DEFAULT_METHODS = ["GET", "HEAD"];
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*"]);
const ATTR_KEY = /^(arg|exe|cgroup|step|action|image|arg\[[0-9]+\])$/;

// ---------------------------------------------------------------------------------------------
// Options

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function rejectUnknownKeys(value: Record<string, unknown>, known: string[], what: string): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw new TypeError(
        `Cannot parse policy: ${what} has an unknown key "${key}" (known: ${known.join(", ")})`,
      );
    }
  }
}

/** Checks `options` (programming errors throw TypeError) and returns the defaults they give. */
export function resolveDefaults(options: PolicyOptions | undefined, runnerCgroup: string): ResolvedDefaults {
  if (options === undefined) options = {};
  if (!isRecord(options)) throw new TypeError("Cannot parse policy: options must be an object");
  // A misspelt key must not pass silently: `{runer: true}` would drop the runner cgroup and let user
  // rules match every process.
  rejectUnknownKeys(options, ["defaults", "repository", "runner"], "options");
  const { defaults, repository, runner } = options as Record<string, unknown>;
  if (repository !== undefined && typeof repository !== "string") {
    throw new TypeError("Cannot parse policy: options.repository must be a string");
  }
  if (runner !== undefined && typeof runner !== "boolean") {
    throw new TypeError("Cannot parse policy: options.runner must be a boolean");
  }
  if (defaults !== undefined && !isRecord(defaults)) {
    throw new TypeError("Cannot parse policy: options.defaults must be an object");
  }
  const d = (defaults ?? {}) as Record<string, unknown>;
  rejectUnknownKeys(d, ["port", "protocol", "methods", "attrs"], "options.defaults");
  const resolved: ResolvedDefaults = {
    port: [443],
    protocol: "tcp",
    methods: [...DEFAULT_METHODS],
    attrs: runner === true ? { cgroup: runnerCgroup } : {},
  };
  if (d.port !== undefined) {
    if (d.port === "*") {
      resolved.port = "*";
    } else if (
      Array.isArray(d.port) && d.port.length > 0 &&
      d.port.every((p) => Number.isInteger(p) && p >= 1 && p <= 65535)
    ) {
      resolved.port = [...(d.port as number[])];
    } else {
      throw new TypeError(
        `Cannot parse policy: options.defaults.port must be "*" or a non-empty list of ports 1..65535`,
      );
    }
  }
  if (d.protocol !== undefined) {
    if (d.protocol !== "tcp" && d.protocol !== "udp") {
      throw new TypeError(`Cannot parse policy: options.defaults.protocol must be "tcp" or "udp"`);
    }
    resolved.protocol = d.protocol;
  }
  if (d.methods !== undefined) {
    if (
      !Array.isArray(d.methods) || d.methods.length === 0 ||
      !d.methods.every((m) => typeof m === "string" && KNOWN_METHODS.has(m))
    ) {
      throw new TypeError(
        "Cannot parse policy: options.defaults.methods must be a non-empty list of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or *",
      );
    }
    resolved.methods = [...(d.methods as string[])];
  }
  if (d.attrs !== undefined) {
    if (!isRecord(d.attrs)) {
      throw new TypeError("Cannot parse policy: options.defaults.attrs must be an object");
    }
    const attrs: Record<string, AttrValue> = {};
    for (const [key, value] of Object.entries(d.attrs)) {
      if (!ATTR_KEY.test(key)) {
        throw new TypeError(`Cannot parse policy: options.defaults.attrs has an unknown attribute "${key}"`);
      }
      if (typeof value === "string") {
        attrs[key] = value;
      } else if (isRecord(value) && typeof value.value === "string" && typeof value.literal === "boolean") {
        attrs[key] = { value: value.value, literal: value.literal };
      } else {
        throw new TypeError(
          `Cannot parse policy: options.defaults.attrs.${key} must be a string or {value: string, literal: boolean}`,
        );
      }
    }
    resolved.attrs = attrs;
  }
  return resolved;
}

// ---------------------------------------------------------------------------------------------
// Placeholders (§7)

type Substituted = { text: string; toOriginal: (index: number) => number } | { error: PolicyIssue };

const PLACEHOLDER = /\{(owner|repo)\}/g;

function substitute(text: string, lineNumber: number, repository: string | undefined): Substituted {
  PLACEHOLDER.lastIndex = 0;
  if (!PLACEHOLDER.test(text)) return { text, toOriginal: (i) => i };
  let owner: string | undefined;
  let repo: string | undefined;
  if (repository !== undefined) {
    const slash = repository.indexOf("/");
    if (slash >= 0) {
      owner = repository.slice(0, slash);
      repo = repository.slice(slash + 1);
    }
  }
  const values: Record<string, string | undefined> = {
    owner: owner !== undefined && /^[A-Za-z0-9-]+$/.test(owner) ? owner : undefined,
    repo: repo !== undefined && /^[A-Za-z0-9._-]+$/.test(repo) ? repo : undefined,
  };
  // Pieces of the new line: each maps to an original offset (a substituted value maps to its "{").
  const map: number[] = [];
  let out = "";
  let last = 0;
  PLACEHOLDER.lastIndex = 0;
  for (let m = PLACEHOLDER.exec(text); m !== null; m = PLACEHOLDER.exec(text)) {
    const value = values[m[1]];
    if (value === undefined) {
      const detail = repository === undefined
        ? "needs a repository"
        : `needs a repository ("owner/repo"; ${JSON.stringify(repository)} does not give a valid ${m[1]})`;
      return {
        error: {
          line: lineNumber,
          column: columnAt(text, m.index),
          message: `placeholder {${m[1]}} ${detail}`,
          text,
        },
      };
    }
    for (let i = last; i < m.index; i++) map.push(i);
    out += text.slice(last, m.index);
    for (let i = 0; i < value.length; i++) map.push(m.index);
    out += value;
    last = m.index + m[0].length;
  }
  for (let i = last; i < text.length; i++) map.push(i);
  out += text.slice(last);
  return { text: out, toOriginal: (i) => (i < map.length ? map[i] : text.length) };
}

// ---------------------------------------------------------------------------------------------
// Path rules (§8)

/** Effective path pattern of a path rule: base path without trailing "/", plus the rule path, runs of "/" collapsed. */
export function pathRulePattern(urlBase: string, rulePath: string): string {
  const afterScheme = urlBase.indexOf("://") + 3;
  const slash = urlBase.indexOf("/", afterScheme);
  const basePath = slash < 0 ? "" : urlBase.slice(slash).replace(/\/$/, "");
  return (basePath + rulePath).replace(/\/{2,}/g, "/");
}

// ---------------------------------------------------------------------------------------------
// Main loop

type Origin = {
  line: number;
  text: string;
  issue(index: number, message: string): PolicyIssue;
};

/** Attributes of a rule or header, last one winning, with a warning per duplicate key. */
function collectAttrs(attrs: AttrAst[], origin: Origin, warnings: PolicyIssue[]): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const attr of attrs) {
    if (Object.hasOwn(out, attr.key)) {
      warnings.push(origin.issue(attr.index, `duplicate attribute "${attr.key}": the last value wins`));
    }
    out[attr.key] = attr.value;
  }
  return out;
}

/** Extra rule info that cross-rule checks need (not part of the JSON rule). */
type RuleInfo = { host: string | null; hostKind: UrlAst["hostKind"] | null; text: string };

/**
 * Parses policy text. `lineOffset`-free: user text is numbered from 1; with `builtin` every rule
 * gets line 0 and no validation findings are kept (built-ins are known good).
 */
export function parsePolicyText(
  text: string,
  defaults: ResolvedDefaults,
  repository: string | undefined,
  builtin = false,
): ParsedPolicy {
  const rules: Rule[] = [];
  const sources: string[] = [];
  const infos: RuleInfo[] = [];
  const errors: PolicyIssue[] = [];
  const warnings: PolicyIssue[] = [];
  const defaultContext: Context = {
    port: defaults.port,
    protocol: defaults.protocol,
    methods: null,
    urlBase: null,
    attrs: defaults.attrs,
    passthrough: false,
    insecure: false,
    headerLine: 0,
  };
  let context = defaultContext;

  for (const source of splitLines(text)) {
    const sub = substitute(source.text, source.number, repository);
    if ("error" in sub) {
      errors.push(sub.error);
      continue;
    }
    const origin: Origin = {
      line: source.number,
      text: source.text,
      issue: (index, message) => ({
        line: source.number,
        column: columnAt(source.text, sub.toOriginal(index)),
        message,
        text: source.text,
      }),
    };
    const parsed = parseLine(sub.text);
    if (!parsed.ok) {
      errors.push(origin.issue(parsed.issue.index, parsed.issue.message));
      continue;
    }
    const line: LineAst = parsed.line;
    if (line.kind === "blank" || line.kind === "comment") continue;
    if (line.kind === "header") {
      context = applyHeader(defaultContext, line, source.number, origin, warnings);
      continue;
    }
    const lineWarnings: PolicyIssue[] = [];
    const built = buildRule(line.rule, context, defaults, origin, lineWarnings);
    if ("error" in built) {
      errors.push(built.error);
      continue;
    }
    warnings.push(...lineWarnings);
    rules.push(built.rule);
    infos.push(built.info);
    const end = sub.toOriginal(parsed.contentEnd);
    sources.push(source.text.slice(0, end).trim());
  }
  if (builtin) {
    for (const rule of rules) rule.line = 0;
    return { rules, sources, errors, warnings: [] };
  }
  warnings.push(...crossRuleWarnings(rules, infos));
  return { rules, sources, errors, warnings };
}

function applyHeader(
  defaults: Context,
  header: Extract<LineAst, { kind: "header" }>,
  lineNumber: number,
  origin: Origin,
  warnings: PolicyIssue[],
): Context {
  const context: Context = { ...defaults, headerLine: lineNumber };
  const category = header.category;
  if (category?.kind === "passthrough") context.passthrough = true;
  if (category?.kind === "insecure") context.insecure = true;
  if (category?.kind === "methods") context.methods = category.methods;
  if (category?.kind === "ports") {
    context.port = category.ports.ports;
    if (category.protocol !== null) context.protocol = category.protocol;
  }
  if (category?.kind === "url") {
    context.urlBase = category.url;
    context.port = category.url.ports?.ports ?? [category.url.scheme === "http" ? 80 : 443];
    context.protocol = "tcp";
  }
  if (header.attrs.length > 0) {
    context.attrs = { ...defaults.attrs, ...collectAttrs(header.attrs, origin, warnings) };
  }
  return context;
}

const copyPort = (port: number[] | "*"): number[] | "*" => (port === "*" ? "*" : [...port]);

function buildRule(
  ast: RuleAst,
  context: Context,
  defaults: ResolvedDefaults,
  origin: Origin,
  warnings: PolicyIssue[],
): { rule: Rule; info: RuleInfo } | { error: PolicyIssue } {
  const ownAttrs = collectAttrs(ast.attrs, origin, warnings);
  const attrs = { ...context.attrs, ...ownAttrs };
  const ruleInsecure = ast.insecure !== null;
  const rulePassthrough = ast.kind === "net" && ast.passthrough !== null;
  const passthrough = rulePassthrough || context.passthrough;
  const insecure = ruleInsecure || context.insecure;
  const fromHeader = (what: string) => `${what} (from the header on line ${context.headerLine})`;

  let rule: Omit<Rule, "line">;
  let info: RuleInfo;
  if (ast.kind === "url") {
    rule = {
      type: "url",
      target: ast.url.text,
      port: ast.url.ports?.ports ?? [ast.url.scheme === "http" ? 80 : 443],
      protocol: "tcp",
      methods: [...(ast.methods ?? context.methods ?? defaults.methods)],
      url_base: null,
      attrs,
    };
    info = { host: ast.url.host, hostKind: ast.url.hostKind, text: origin.text };
  } else if (ast.kind === "path") {
    if (context.urlBase === null) {
      return {
        error: origin.issue(
          ast.pathIndex,
          "a path rule needs a URL-base header before it (e.g. [https://example.com])",
        ),
      };
    }
    rule = {
      type: "path",
      target: ast.path,
      port: copyPort(context.port),
      protocol: "tcp",
      methods: [...(ast.methods ?? context.methods ?? defaults.methods)],
      url_base: context.urlBase.text,
      attrs,
    };
    info = { host: context.urlBase.host, hostKind: context.urlBase.hostKind, text: origin.text };
  } else {
    const isDns = ast.type === "dns_host" || ast.type === "dns_wildcard_host";
    if (isDns && (ast.ports !== null || ast.protocol !== null)) {
      warnings.push(origin.issue(ast.ports!.index, "a port or protocol on a dns: rule is ignored"));
    }
    rule = {
      type: ast.type,
      target: ast.target,
      port: copyPort(isDns ? context.port : ast.ports?.ports ?? context.port),
      protocol: isDns ? context.protocol : ast.protocol ?? context.protocol,
      methods: null,
      url_base: null,
      attrs,
    };
    const isHost = ast.type === "host" || ast.type === "wildcard_host";
    info = {
      host: isHost ? ast.target : null,
      hostKind: ast.type === "host" ? "host" : ast.type === "wildcard_host" ? "wildcard" : null,
      text: origin.text,
    };
  }

  // §5: passthrough only on host/wildcard_host, insecure not on dns_*, never both.
  const type = rule.type;
  if (passthrough && type !== "host" && type !== "wildcard_host") {
    const message = `passthrough is allowed only on host and wildcard rules, not on ${type} rules`;
    return {
      error: rulePassthrough
        ? origin.issue((ast as { passthrough: { index: number } }).passthrough.index, message)
        : origin.issue(ast.index, fromHeader(message)),
    };
  }
  if (insecure && (type === "dns_host" || type === "dns_wildcard_host")) {
    const message = "insecure is not allowed on a dns: rule";
    return {
      error: ruleInsecure
        ? origin.issue(ast.insecure!.index, message)
        : origin.issue(ast.index, fromHeader(message)),
    };
  }
  if (passthrough && insecure) {
    const message = "a rule cannot be both passthrough and insecure";
    const at = ruleInsecure
      ? ast.insecure!.index
      : rulePassthrough
      ? (ast as { passthrough: { index: number } }).passthrough.index
      : ast.index;
    return { error: origin.issue(at, ruleInsecure && rulePassthrough ? message : fromHeader(message)) };
  }
  const flags = {
    ...(passthrough ? { passthrough: true as const } : {}),
    ...(insecure ? { insecure: true as const } : {}),
  };
  return { rule: { ...rule, ...flags, line: origin.line }, info };
}

// ---------------------------------------------------------------------------------------------
// Cross-rule warnings (§9)

/** Whether host patterns `a` and `b` (exact names or wildcard patterns) overlap, in either direction. */
function hostsOverlap(a: string, b: string): boolean {
  return hostPatternMatches(a, normalizeHostname(b), true) ||
    hostPatternMatches(b, normalizeHostname(a), true);
}

/** Label suffixes of a lower-cased name, longest first: "a.b.c" → a.b.c, b.c, c. */
function suffixesOf(name: string): string[] {
  const out = [name];
  for (let dot = name.indexOf("."); dot >= 0; dot = name.indexOf(".", dot + 1)) out.push(name.slice(dot + 1));
  return out;
}

/** The labels of a wildcard pattern after its wildcard labels: "*.derp*.x.com" → "x.com". */
function fixedSuffix(pattern: string): string {
  const labels = normalizeHostname(pattern).split(".");
  let i = 0;
  while (i < labels.length && labels[i].includes("*")) i++;
  return labels.slice(i).join(".");
}

/**
 * Host names and wildcard patterns indexed by label suffix, so that overlap checks look up the
 * few rules that can overlap instead of comparing every pair. `candidates` is a superset of
 * the overlapping entries (callers still check each), in index order.
 */
class HostIndex {
  private readonly exact = new Map<string, number[]>();
  private readonly exactBySuffix = new Map<string, number[]>();
  private readonly wildByFixed = new Map<string, number[]>();
  private readonly wildBySuffixOfFixed = new Map<string, number[]>();

  private static push(map: Map<string, number[]>, key: string, id: number): void {
    const list = map.get(key);
    if (list === undefined) map.set(key, [id]);
    else list.push(id);
  }

  add(id: number, host: string, wildcard: boolean): void {
    if (wildcard) {
      const fixed = fixedSuffix(host);
      HostIndex.push(this.wildByFixed, fixed, id);
      for (const s of suffixesOf(fixed)) HostIndex.push(this.wildBySuffixOfFixed, s, id);
    } else {
      const name = normalizeHostname(host);
      HostIndex.push(this.exact, name, id);
      for (const s of suffixesOf(name)) HostIndex.push(this.exactBySuffix, s, id);
    }
  }

  candidates(host: string, wildcard: boolean): number[] {
    const found = new Set<number>();
    const addAll = (ids: number[] | undefined) => ids?.forEach((id) => found.add(id));
    if (wildcard) {
      const fixed = fixedSuffix(host);
      // Names under the fixed suffix, and patterns whose fixed suffix nests with it either way.
      addAll(this.exactBySuffix.get(fixed));
      addAll(this.wildBySuffixOfFixed.get(fixed));
      for (const s of suffixesOf(fixed)) addAll(this.wildByFixed.get(s));
    } else {
      const name = normalizeHostname(host);
      addAll(this.exact.get(name));
      for (const s of suffixesOf(name)) addAll(this.wildByFixed.get(s));
    }
    return [...found].sort((a, b) => a - b);
  }
}

function crossRuleWarnings(rules: Rule[], infos: RuleInfo[]): PolicyIssue[] {
  const warnings: PolicyIssue[] = [];
  const web: number[] = [];
  const passthroughs: number[] = [];
  const insecures: number[] = [];
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if ((r.type === "url" || r.type === "path") && infos[i].hostKind !== "ip") web.push(i);
    if (r.passthrough) passthroughs.push(i);
    if (r.insecure && infos[i].host !== null && infos[i].hostKind !== "ip") insecures.push(i);
  }
  const warn = (first: number, message: string) =>
    warnings.push({ line: 0, column: 0, message, text: infos[first].text });

  const webIndex = new HostIndex();
  for (const w of web) webIndex.add(w, infos[w].host!, infos[w].hostKind === "wildcard");
  const passthroughIndex = new HostIndex();
  for (const p of passthroughs) passthroughIndex.add(p, infos[p].host!, infos[p].hostKind === "wildcard");
  const overlapping = (index: HostIndex, i: number) =>
    index.candidates(infos[i].host!, infos[i].hostKind === "wildcard").filter((j) =>
      j !== i && hostsOverlap(infos[j].host!, infos[i].host!)
    );

  // 1. passthrough covering a URL/path rule's host.
  for (const p of passthroughs) {
    for (const w of overlapping(webIndex, p)) {
      warn(
        p,
        `passthrough rule on line ${rules[p].line} covers the host of the ${rules[w].type} rule on line ${
          rules[w].line
        }: URL/method filtering will not apply to that host`,
      );
    }
  }
  // 2. insecure rule overlapped by a passthrough rule.
  for (const i of insecures) {
    for (const p of overlapping(passthroughIndex, i)) {
      warn(
        i,
        `insecure rule on line ${rules[i].line} has no effect where the passthrough rule on line ${
          rules[p].line
        } matches the same host`,
      );
    }
  }
  // 3. insecure URL/path rule sharing its host with a verified URL/path rule.
  const verifiedByHost = new Map<string, number>();
  for (const w of web) {
    if (!rules[w].insecure) {
      const key = infos[w].host!.toLowerCase();
      if (!verifiedByHost.has(key)) verifiedByHost.set(key, w);
    }
  }
  for (const i of web) {
    if (!rules[i].insecure) continue;
    const other = verifiedByHost.get(infos[i].host!.toLowerCase());
    if (other === undefined) continue;
    warn(
      i,
      `insecure ${rules[i].type} rule on line ${
        rules[i].line
      } applies to the whole connection: requests of the ${rules[other].type} rule on line ${
        rules[other].line
      } to the same host also go unverified`,
    );
  }
  return warnings;
}
