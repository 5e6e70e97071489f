// `egress suggest` (cli.md §suggest), the pure part: from a connection log (usually recorded in
// audit mode), the tightest policy that allows every connection in it. The job summary calls
// `suggestPolicy` too. No Deno API, no node: module.
//
// How it stays valid: every rule is generated from what the replay of `egress analyze` judges
// (`toConnectionEvent`, the same DNS cache: both from `./replay.ts`), the DNS names still missing
// are found by asking the Enforcer, and a final replay lists as comments anything the suggestion
// still does not allow.

import { RUNNER_CGROUP } from "../policy/builtins.ts";
import { eventIpv4, formatIpv4 } from "../policy/ipv4.ts";
import { parseEventUrl } from "../policy/matcher.ts";
import { type DnsCache, Enforcer, parsePolicy, validatePolicy } from "../policy/mod.ts";
import { ruleSourceText } from "../policy/policy.ts";
import type { PolicyOptions } from "../policy/types.ts";
import { hasDotSegment, requestPathOf } from "../policy/url_path.ts";
import { libraryOptions, replay, replayCache, toConnectionEvent } from "./replay.ts";
import type { LogEntry, LogEvent } from "./replay.ts";

/** Process fields a suggestion can scope by: `step`/`action` go into headers, `exe` onto rules. */
export type ScopeKey = "step" | "action" | "exe";
export const SCOPE_KEYS: readonly ScopeKey[] = ["step", "action", "exe"];

export type SuggestOptions = {
  /** `auto` (default): every scope key the event has; `none`; or a list. */
  scope?: "auto" | "none" | readonly ScopeKey[];
  /** Host rules instead of URL rules for requests. */
  hosts?: boolean;
  /** As `egress validate --no-defaults`: no built-in runner rules (user rules keep the runner cgroup). */
  noDefaults?: boolean;
  /** Named in the first comment line (e.g. the log file). */
  source?: string;
};

/**
 * `--scope` text → option: `auto`, `none`, or a comma list of `step`, `action`, `exe`.
 * @throws Error naming the bad element.
 */
export function parseScope(text: string): "auto" | "none" | ScopeKey[] {
  if (text === "auto" || text === "none") return text;
  const keys: ScopeKey[] = [];
  for (const part of text.split(",")) {
    const key = part.trim();
    if (!(SCOPE_KEYS as readonly string[]).includes(key)) {
      throw new Error(
        `Cannot use scope ${JSON.stringify(text)}: ${
          JSON.stringify(key)
        } is not auto, none, step, action or exe`,
      );
    }
    if (!keys.includes(key as ScopeKey)) keys.push(key as ScopeKey);
  }
  return keys;
}

/** The library options a suggestion is written for (and must be parsed with): as analyze's. */
export function suggestionPolicyOptions(noDefaults = false): PolicyOptions {
  return libraryOptions({ noDefaults, noRunnerCgroup: false });
}

/**
 * The suggested policy text for the events of a log (in log order; `dns_response` lines feed the
 * DNS cache as in analyze). Sorted and deterministic: the same events in any order give the same
 * text. Ends with `[]`.
 * @throws Error if the generated text does not validate (a bug: never written out).
 */
export function suggestPolicy(events: readonly LogEvent[], options: SuggestOptions = {}): string {
  const entries: LogEntry[] = events.map((event, i) => ({ lineNumber: i + 1, event }));
  const policyOptions = suggestionPolicyOptions(options.noDefaults ?? false);
  const cache = replayCache(entries);
  const builtins = new Enforcer(parsePolicy("", policyOptions), { dnsCache: cache });
  const rules = new RuleSet();
  const unattributed = new Counter();
  const inexpressible = new Counter();
  const dnsEvents: Array<{ event: LogEvent; scope: Scope }> = [];

  for (const { event } of entries) {
    if (event.type === "dns_response" || event.type === "sudo" || event.error !== undefined) continue;
    const { connection, mitm } = toConnectionEvent(event);
    if (builtins.decide(connection, { mitm }).allowed) continue;
    if (event.cgroup === undefined || event.cgroup === "") {
      unattributed.add(describe(event));
      continue;
    }
    const scope = scopeOf(event, options.scope ?? "auto");
    const source = sourceLabel(event);
    const problem = addEventRules(rules, event, scope, source, cache, options.hosts ?? false, builtins);
    if (problem !== undefined) inexpressible.add(`${describe(event)}: ${problem}`);
    if (event.type === "dns" && typeof event.name === "string" && event.name !== "") {
      dnsEvents.push({ event, scope });
    }
  }

  // dns ⇒ `dns:name` only where no host/URL rule of the same scope already permits the name.
  if (dnsEvents.length > 0) {
    const enforcer = new Enforcer(parsePolicy(rules.render(), policyOptions), { dnsCache: cache });
    for (const { event, scope } of dnsEvents) {
      const { connection } = toConnectionEvent(event);
      if (enforcer.decide(connection).reason !== "name not allowed") continue;
      const name = normalizeName(event.name!);
      if (isPolicyHostname(name)) rules.addNet(scope, { target: `dns:${name}` }, sourceLabel(event));
      else inexpressible.add(`${describe(event)}: ${JSON.stringify(name)} is no hostname a rule can name`);
    }
  }

  const body = rules.render();
  // The replay of analyze over the whole log: what it still blocks (beyond the unattributed) is listed.
  const check = parsePolicy(body, policyOptions);
  const describeRule = (index: number) => ({
    rule: ruleSourceText(check, index),
    line: check.rules[index].line,
  });
  for (const finding of replay(entries, check, describeRule)) {
    if (finding.status !== "blocked" || finding.process.cgroup === undefined) continue;
    const event = entries[finding.first_line - 1].event; // lineNumber = index + 1
    inexpressible.add(`${describe(event)}: ${finding.reason ?? "blocked"}`);
  }

  const lines: string[] = [];
  const settings = [
    `scope ${scopeText(options.scope ?? "auto")}`,
    ...(options.hosts ? ["host rules"] : []),
    ...(options.noDefaults ? ["no built-in rules"] : []),
  ];
  lines.push(
    `# Suggested by egress suggest${options.source !== undefined ? ` from ${comment(options.source)}` : ""}` +
      ` (${settings.join(", ")}): review before use.`,
  );
  for (const [text, count] of unattributed.sorted()) {
    lines.push(`# unattributed: ${comment(text)}${count > 1 ? ` (×${count})` : ""}`);
  }
  for (const [text, count] of inexpressible.sorted()) {
    lines.push(`# not allowed by this suggestion: ${comment(text)}${count > 1 ? ` (×${count})` : ""}`);
  }
  const text = `${lines.join("\n")}\n${body}[]\n`;
  const { errors } = validatePolicy(text, policyOptions);
  if (errors.length > 0) {
    const e = errors[0];
    throw new Error(`Cannot suggest a policy: generated line ${e.line} is invalid: ${e.message} (${e.text})`);
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Scope and rendering of attributes

/** Header attributes (step, action, cgroup, image) and the rule's `exe`. */
type Scope = { header: string; exe?: string };

function scopeOf(event: LogEvent, scope: SuggestOptions["scope"]): Scope {
  const keys: readonly ScopeKey[] = scope === "auto" || scope === undefined
    ? SCOPE_KEYS
    : scope === "none"
    ? []
    : scope;
  const attrs: string[] = [];
  if (keys.includes("step") && nonEmpty(event.step)) attrs.push(attr("step", event.step));
  if (keys.includes("action") && nonEmpty(event.action)) attrs.push(attr("action", event.action));
  // Not a scope choice: without these a rule would not match the container or other cgroup at all.
  const cgroup = event.cgroup!;
  if (/docker/i.test(cgroup)) attrs.push("cgroup=@docker");
  else if (cgroup !== RUNNER_CGROUP) attrs.push(attr("cgroup", cgroup));
  if (nonEmpty(event.image)) attrs.push(attr("image", event.image));
  return {
    header: attrs.length === 0 ? "" : `[${attrs.join(" ")}]`,
    ...(keys.includes("exe") && nonEmpty(event.exe) ? { exe: event.exe } : {}),
  };
}

function scopeText(scope: SuggestOptions["scope"]): string {
  return typeof scope === "string" ? scope : scope === undefined ? "auto" : scope.join(",");
}

const PLAIN_VALUE = /^[A-Za-z0-9._\/:+,=%~@-]+$/;

/** Characters no policy line can hold (its line terminators, other controls). */
// deno-lint-ignore no-control-regex
const UNWRITABLE = /[\u0000-\u001f\u007f\u0085\u2028\u2029]/g;
// deno-lint-ignore no-control-regex
const HAS_UNWRITABLE = /[\u0000-\u001f\u007f\u0085\u2028\u2029]/;

/**
 * `key=value` matching exactly `value`: unquoted when that is safe, else double-quoted (literal).
 * A value with `"` or a character no line can hold becomes a backtick glob in which those and the
 * glob characters are `?` (one character): the closest pattern that can be written.
 */
function attr(key: string, value: string): string {
  const shortcut = key === "cgroup" && (value === "@docker" || value === "@host");
  if (PLAIN_VALUE.test(value) && !shortcut) return `${key}=${value}`;
  if (!value.includes('"') && !HAS_UNWRITABLE.test(value)) {
    return `${key}="${value}"`;
  }
  return `${key}=\`${value.replace(UNWRITABLE, "?").replace(/[*?[`]/g, "?")}\``;
}

/** Text safe inside a `#` comment: no line terminator of policy.md §1 or other control character. */
function comment(text: string): string {
  return text.replace(UNWRITABLE, "?");
}

function nonEmpty(value: string | undefined): value is string {
  return typeof value === "string" && value !== "";
}

/** "step __run_2 (actions/checkout), /usr/bin/git" — what the rule comment names. */
function sourceLabel(event: LogEvent): string {
  const step = nonEmpty(event.step) ? `step ${event.step}` : "no step";
  const action = nonEmpty(event.action) ? ` (${event.action})` : "";
  const process = nonEmpty(event.exe)
    ? event.exe
    : nonEmpty(event.image)
    ? `image ${event.image}`
    : "unknown exe";
  return `${step}${action}, ${process}`;
}

function describe(event: LogEvent): string {
  let what: string;
  if (typeof event.url === "string") {
    const cut = event.url.search(/[?#]/);
    what = `${(event.method ?? "GET").toUpperCase()} ${cut < 0 ? event.url : event.url.slice(0, cut)}`;
  } else if (event.type === "dns") what = `dns ${event.name ?? ""} via ${event.dst_ip}:${event.dst_port}`;
  else if (event.type === "udp") what = `udp ${event.dst_ip}:${event.dst_port}`;
  else {
    const host = typeof event.host === "string" && event.host !== "" ? event.host : event.dst_ip;
    what = `${event.type} ${host}:${event.dst_port}`;
  }
  return nonEmpty(event.exe) ? `${what} by ${event.exe}` : what;
}

class Counter {
  readonly #counts = new Map<string, number>();
  add(key: string) {
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
  }
  sorted(): Array<[string, number]> {
    return [...this.#counts.entries()].sort(([a], [b]) => compare(a, b));
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Rules

type NetSpec = {
  /** hostname, IPv4 or `dns:name` */
  target: string;
  port?: number;
  udp?: boolean;
  passthrough?: boolean;
  insecure?: boolean;
};

type NetRule = NetSpec & { ports: Set<number>; sources: Set<string> };
type UrlTarget = {
  scheme: string;
  host: string;
  /** `:port` or "" for the scheme default. */
  portSpec: string;
  insecure: boolean;
  paths: Map<string, { methods: Set<string>; sources: Set<string> }>;
};
type Group = { net: Map<string, NetRule>; urls: Map<string, UrlTarget> };

const METHOD_ORDER = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/** RFC 3986 path characters the policy grammar accepts in a URL rule. */
const PATH_CHARS = /^[A-Za-z0-9._~!$&'()*+,;=:@%\/-]*$/;
const MAX_SOURCES_SHOWN = 3;

class RuleSet {
  readonly #groups = new Map<string, Map<string, Group>>();

  #group(scope: Scope): Group {
    let byExe = this.#groups.get(scope.header);
    if (byExe === undefined) this.#groups.set(scope.header, byExe = new Map());
    const exeKey = scope.exe ?? "";
    let group = byExe.get(exeKey);
    if (group === undefined) byExe.set(exeKey, group = { net: new Map(), urls: new Map() });
    return group;
  }

  addNet(scope: Scope, spec: NetSpec, source: string) {
    const group = this.#group(scope);
    const key = JSON.stringify([
      spec.target,
      spec.udp ?? false,
      spec.passthrough ?? false,
      spec.insecure ?? false,
    ]);
    let rule = group.net.get(key);
    if (rule === undefined) group.net.set(key, rule = { ...spec, ports: new Set(), sources: new Set() });
    if (spec.port !== undefined) rule.ports.add(spec.port);
    rule.sources.add(source);
  }

  addUrl(scope: Scope, target: Omit<UrlTarget, "paths">, path: string, method: string, source: string) {
    const group = this.#group(scope);
    const key = JSON.stringify([target.scheme, target.host, target.portSpec, target.insecure]);
    let url = group.urls.get(key);
    if (url === undefined) group.urls.set(key, url = { ...target, paths: new Map() });
    let entry = url.paths.get(path);
    if (entry === undefined) url.paths.set(path, entry = { methods: new Set(), sources: new Set() });
    entry.methods.add(method);
    entry.sources.add(source);
  }

  /** Groups sorted by header (the unscoped one first, without a header), rules sorted. */
  render(): string {
    const out: string[] = [];
    for (const header of [...this.#groups.keys()].sort(compare)) {
      const lines: Array<[string, string]> = [];
      for (const [exe, group] of this.#groups.get(header)!) {
        const exeText = exe === "" ? "" : ` ${attr("exe", exe)}`;
        for (const rule of group.net.values()) {
          lines.push([netRuleText(rule) + exeText, sourcesText(rule.sources)]);
        }
        for (const url of group.urls.values()) {
          for (const { pattern, methods, sources } of collapsePaths(url.paths)) {
            const flags = url.insecure ? " insecure" : "";
            lines.push([
              `${
                methodsText(methods)
              } ${url.scheme}://${url.host}${url.portSpec}${pattern}${flags}${exeText}`,
              sourcesText(sources),
            ]);
          }
        }
      }
      if (header !== "") out.push(header);
      lines.sort(([a], [b]) => compare(a, b));
      for (const [rule, note] of lines) out.push(`${rule}  # ${note}`);
    }
    return out.length === 0 ? "" : out.join("\n") + "\n";
  }
}

function netRuleText(rule: NetRule): string {
  if (rule.target.startsWith("dns:")) return rule.target;
  const ports = [...rule.ports].sort((a, b) => a - b);
  const isHost = eventIpv4(rule.target) === undefined;
  let text = rule.target;
  if (rule.udp) text += `:${ports.join("|")}/udp`;
  else if (!(isHost && ports.length === 1 && ports[0] === 443)) text += `:${ports.join("|")}`;
  if (rule.passthrough) text += " passthrough";
  if (rule.insecure) text += " insecure";
  return text;
}

function sourcesText(sources: Set<string>): string {
  const sorted = [...sources].sort(compare);
  const shown = sorted.slice(0, MAX_SOURCES_SHOWN).map(comment).join("; ");
  return sorted.length > MAX_SOURCES_SHOWN ? `${shown}; +${sorted.length - MAX_SOURCES_SHOWN} more` : shown;
}

function methodsText(methods: Set<string>): string {
  if ([...methods].some((m) => !METHOD_ORDER.includes(m))) return "*";
  return METHOD_ORDER.filter((m) => methods.has(m)).join("|");
}

/** Adds the rules one event needs; returns why it cannot be expressed, if so. */
function addEventRules(
  rules: RuleSet,
  event: LogEvent,
  scope: Scope,
  source: string,
  cache: DnsCache,
  hosts: boolean,
  builtins: Enforcer,
): string | undefined {
  const ip = eventIpv4(event.dst_ip ?? "");
  const ipText = ip === undefined ? undefined : formatIpv4(ip);
  const port = event.dst_port ?? 0;
  const portOk = port >= 1 && port <= 65535;
  const ipRule = (spec: Omit<NetSpec, "target">): string | undefined => {
    if (ipText === undefined) return "destination IP unknown";
    if (!portOk) return "destination port unknown";
    rules.addNet(scope, { target: ipText, port, ...spec }, source);
    return undefined;
  };

  if (typeof event.url === "string" && (event.type === "http" || event.type === "https")) {
    const url = parseEventUrl(event.url);
    if (url === undefined || (url.scheme !== "http" && url.scheme !== "https")) return "URL cannot be parsed";
    const defaultPort = url.scheme === "https" ? 443 : 80;
    const realPort = portOk ? port : defaultPort;
    const insecure = event.insecure === true;
    const path = requestPathOf(url.path);
    const hostOk = isPolicyHostname(url.host) || eventIpv4(url.host) !== undefined;
    if (!hostOk) return ipRule(insecure ? { insecure } : {});
    if (hosts || hasDotSegment(path) || !PATH_CHARS.test(path)) {
      // A host rule allows every request to the host (URL rules cannot name such a path).
      if (eventIpv4(url.host) !== undefined) return ipRule(insecure ? { insecure } : {});
      rules.addNet(scope, { target: url.host, port: realPort, ...(insecure ? { insecure } : {}) }, source);
      return undefined;
    }
    const method = (event.method ?? "GET").toUpperCase();
    rules.addUrl(
      scope,
      {
        scheme: url.scheme,
        host: url.host,
        portSpec: realPort === defaultPort ? "" : `:${realPort}`,
        insecure,
      },
      path,
      method,
      source,
    );
    return undefined;
  }

  switch (event.type) {
    case "https":
    case "http": {
      const sni = typeof event.host === "string" && event.host !== "" ? normalizeName(event.host) : undefined;
      // Without SNI the replay names the connection from the DNS cache, as the daemon does.
      const name = sni ?? (ipText === undefined ? undefined : cachedName(cache, ipText));
      const passthrough = event.passthrough === true;
      if (name !== undefined && isPolicyHostname(name) && portOk) {
        rules.addNet(scope, {
          target: name,
          port,
          ...(passthrough && sni !== undefined ? { passthrough } : {}),
        }, source);
        return undefined;
      }
      return ipRule({});
    }
    case "tcp": {
      const name = typeof event.host === "string" && event.host !== ""
        ? normalizeName(event.host)
        : undefined;
      // The logged name is usable only if the log's DNS answers tie it to this IP (the replay checks that).
      if (
        name !== undefined && ipText !== undefined && portOk && isPolicyHostname(name) &&
        cache.lookupAll(ipText).includes(name)
      ) {
        rules.addNet(scope, { target: name, port }, source);
        return undefined;
      }
      return ipRule({});
    }
    case "udp":
      return ipRule({ udp: true });
    case "dns": {
      // The resolver, unless a built-in rule allows it; the name is added later if still missing.
      const resolver = builtins.decide({
        ...toConnectionEvent(event).connection,
        type: "udp",
        name: undefined,
      });
      return resolver.allowed ? undefined : ipRule({ udp: true });
    }
  }
  return undefined;
}

function cachedName(cache: DnsCache, ip: string): string | undefined {
  return cache.lookupAll(ip).filter(isPolicyHostname).sort(compare)[0];
}

function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

const LABEL = "[a-z0-9](?:[a-z0-9-]*[a-z0-9])?";
const HOSTNAME = new RegExp(`^(?:${LABEL}\\.)+[a-z][a-z0-9]*$`);

/** A name the policy grammar accepts as a `host` target (lower-case input). */
export function isPolicyHostname(name: string): boolean {
  if (!HOSTNAME.test(name)) return false;
  const labels = name.split(".");
  return !(labels.length >= 4 && labels.slice(0, 4).every((l) => /^\d+$/.test(l)));
}

// ---------------------------------------------------------------------------------------------
// Path collapsing

/**
 * Whether a path segment looks like a value that changes between runs or requests: a number, a
 * hex hash, a UUID, a digest (`sha256:…`), a version, a long random token.
 */
export function isVariableSegment(segment: string): boolean {
  if (segment === "") return false;
  return /^\d+$/.test(segment) ||
    (/^[0-9a-f]{7,}$/i.test(segment) && /\d/.test(segment)) ||
    /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(segment) ||
    /^[a-z0-9]+:[0-9a-f]{16,}$/i.test(segment) ||
    /^v?\d+(\.\d+)+([-+~][0-9A-Za-z.+-]*)?$/.test(segment) ||
    (/^[A-Za-z0-9_-]{20,}$/.test(segment) && /\d/.test(segment) && /[A-Za-z]/.test(segment));
}

/**
 * Paths that differ only in variable-looking segments (ids, versions, hashes) become one pattern
 * with `*` where they differ; a path seen alone, or differing in a plain word, stays exact.
 * Methods and sources of merged paths are merged.
 */
export function collapsePaths(
  paths: Map<string, { methods: Set<string>; sources: Set<string> }>,
): Array<{ pattern: string; methods: Set<string>; sources: Set<string> }> {
  const clusters = new Map<string, string[]>();
  for (const path of paths.keys()) {
    const key = path.split("/").map((s) => isVariableSegment(s) ? "\u0000" : s).join("/");
    const members = clusters.get(key);
    if (members === undefined) clusters.set(key, [path]);
    else members.push(path);
  }
  const result: Array<{ pattern: string; methods: Set<string>; sources: Set<string> }> = [];
  for (const members of clusters.values()) {
    const split = members.map((p) => p.split("/"));
    const pattern = members.length === 1
      ? members[0]
      : split[0].map((segment, i) => split.every((s) => s[i] === segment) ? segment : "*").join("/");
    const methods = new Set<string>();
    const sources = new Set<string>();
    for (const path of members) {
      const entry = paths.get(path)!;
      entry.methods.forEach((m) => methods.add(m));
      entry.sources.forEach((s) => sources.add(s));
    }
    result.push({ pattern, methods, sources });
  }
  return result;
}
