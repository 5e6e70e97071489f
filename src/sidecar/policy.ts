// Sidecar policy (sidecar.md §4): the JSON form, the policy-language form limited to network rules,
// and their compiled shape used by the DNS proxy and the nftables generator. Pure: no Deno API.

import { parsePolicy, ruleSourceText, validatePolicy } from "../policy/policy.ts";
import { hostPatternMatches, normalizeHostname } from "../policy/hostname.ts";
import { columnAt, splitLines } from "../policy/lines.ts";
import type { PolicyIssue, Rule } from "../policy/types.ts";
import { type AddressRange, parseAddressTarget } from "./address.ts";

export const MAX_RULES = 4096;

export type SidecarAction = "allow" | "deny";
export type SidecarProtocol = "tcp" | "udp";

/** One entry as the API shows it: `ports`/`protocol` absent ⇒ any. */
export type SidecarEntry = {
  action: SidecarAction;
  target: string;
  ports?: number[] | "*";
  protocol?: SidecarProtocol;
  /**
   * Policy-language entries: their source line (trimmed, inline comment removed), logged as `rule`
   * (events.md). Not part of the API view.
   */
  source?: string;
};

export type SidecarPolicy = { defaultAction: SidecarAction; egress: SidecarEntry[] };

export const DENY_ALL: SidecarPolicy = Object.freeze({ defaultAction: "deny", egress: [] }) as SidecarPolicy;

export type ParseResult = { ok: true; policy: SidecarPolicy } | { ok: false; errors: PolicyIssue[] };

export type TargetKind = "host" | "wildcard_host" | "dns_host" | "dns_wildcard_host" | "address";

/**
 * How an entry's destinations are keyed in nftables: by address only (any protocol and port), by
 * address·protocol (all ports), or by address·protocol·port.
 */
export type KeyShape = "addr" | "proto" | "port";

export type CompiledEntry = {
  entry: SidecarEntry;
  index: number;
  kind: TargetKind;
  /** lower-cased host pattern (host kinds) */
  pattern?: string;
  range?: AddressRange;
  shape: KeyShape;
  protocols: SidecarProtocol[];
  ports: number[];
};

export type CompiledPolicy = {
  policy: SidecarPolicy;
  entries: CompiledEntry[];
  counts: { allow: number; deny: number };
};

export type NameVerdict = {
  policy: SidecarAction;
  /** the deciding entry, when one matched */
  entry?: CompiledEntry;
  /** allow entries whose addresses go into the dynamic sets (host kinds only, not dns:) */
  grants: CompiledEntry[];
  reason?: string;
};

// ------------------------------------------------------------------ targets

const HOSTLIKE_FORBIDDEN = /[\s#\[\]=`"/:|]/;

/** Classifies a JSON target; returns an error message when it is none of the accepted forms. */
export function classifyTarget(target: string): { kind: TargetKind; range?: AddressRange } | string {
  if (target.length === 0) return "target is empty";
  const range = parseAddressTarget(target);
  if (range !== undefined) return { kind: "address", range };
  if (/^[0-9a-fA-F:.\/]+$/.test(target) && (target.includes(":") || /^[0-9.\/]+$/.test(target))) {
    return `target "${target}" is not a valid IP address or CIDR`;
  }
  const dns = target.startsWith("dns:");
  const name = dns ? target.slice(4) : target;
  if (name.length === 0 || HOSTLIKE_FORBIDDEN.test(name)) {
    return `target "${target}" is not a hostname, wildcard, IP address or CIDR`;
  }
  const checked = validatePolicy(target);
  if (checked.errors.length > 0) return `target "${target}": ${checked.errors[0].message}`;
  const rule = checked.rules[0];
  if (checked.rules.length !== 1 || rule === undefined) {
    return `target "${target}" is not a hostname, wildcard, IP address or CIDR`;
  }
  if (rule.type === "host" || rule.type === "wildcard_host") return { kind: rule.type };
  if (rule.type === "dns_host" || rule.type === "dns_wildcard_host") return { kind: rule.type };
  return `target "${target}" is not a hostname, wildcard, IP address or CIDR`;
}

/** Targets compare case-insensitively for names (PATCH replaces, DELETE removes by target). */
export function targetKey(target: string): string {
  return target.trim().toLowerCase();
}

// ------------------------------------------------------------------ JSON form

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

function issue(line: number, message: string, text: string, column = 0): PolicyIssue {
  return { line, column, message, text };
}

/** Validates one JSON entry; `line` = entry index + 1. */
function entryFromJson(raw: unknown, line: number): SidecarEntry | PolicyIssue {
  const text = describe(raw);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return issue(line, "entry must be an object {action, target, ports?, protocol?}", text);
  }
  const object = raw as Record<string, unknown>;
  for (const key of Object.keys(object)) {
    if (!["action", "target", "ports", "protocol"].includes(key)) {
      return issue(line, `unknown key "${key}" (expected action, target, ports, protocol)`, text);
    }
  }
  const action = object.action ?? "allow";
  if (action !== "allow" && action !== "deny") return issue(line, `"action" must be "allow" or "deny"`, text);
  if (typeof object.target !== "string") return issue(line, `"target" must be a string`, text);
  const target = object.target.trim();
  const kind = classifyTarget(target);
  if (typeof kind === "string") return issue(line, kind, text);
  const entry: SidecarEntry = { action, target };
  if (object.ports !== undefined) {
    if (object.ports === "*") entry.ports = "*";
    else if (
      Array.isArray(object.ports) && object.ports.length > 0 &&
      object.ports.every((p) => Number.isInteger(p) && p >= 1 && p <= 65535)
    ) {
      entry.ports = [...(object.ports as number[])];
    } else {
      return issue(line, `"ports" must be "*" or a non-empty list of ports 1..65535`, text);
    }
  }
  if (object.protocol !== undefined) {
    if (object.protocol !== "tcp" && object.protocol !== "udp") {
      return issue(line, `"protocol" must be "tcp" or "udp"`, text);
    }
    entry.protocol = object.protocol;
  }
  return entry;
}

function jsonSyntaxIssue(text: string, error: unknown): PolicyIssue {
  const message = error instanceof Error ? error.message : String(error);
  const position = /position (\d+)/.exec(message);
  let line = 1, column = 0;
  if (position) {
    const offset = Number(position[1]);
    const before = text.slice(0, offset).split("\n");
    line = before.length;
    column = before[before.length - 1].length + 1;
  }
  const lineText = text.split("\n")[line - 1] ?? "";
  return issue(line, `invalid JSON: ${message}`, lineText.slice(0, 200), column);
}

/** Parses the JSON form (`{"defaultAction", "egress": [...]}`). */
export function parseJsonPolicy(text: string): ParseResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return { ok: false, errors: [jsonSyntaxIssue(text, error)] };
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return {
      ok: false,
      errors: [issue(0, `policy must be an object {"defaultAction", "egress"}`, describe(raw))],
    };
  }
  const object = raw as Record<string, unknown>;
  const errors: PolicyIssue[] = [];
  for (const key of Object.keys(object)) {
    if (key !== "defaultAction" && key !== "egress") {
      errors.push(issue(0, `unknown key "${key}" (expected defaultAction, egress)`, describe(key)));
    }
  }
  const defaultAction = object.defaultAction ?? "deny";
  if (defaultAction !== "allow" && defaultAction !== "deny") {
    errors.push(issue(0, `"defaultAction" must be "allow" or "deny"`, describe(object.defaultAction)));
  }
  const list = object.egress ?? [];
  if (!Array.isArray(list)) {
    errors.push(issue(0, `"egress" must be a list`, describe(list)));
    return { ok: false, errors };
  }
  if (list.length > MAX_RULES) return { ok: false, errors: [capIssue(list.length)] };
  const egress: SidecarEntry[] = [];
  list.forEach((raw, index) => {
    const result = entryFromJson(raw, index + 1);
    if ("message" in result) errors.push(result);
    else egress.push(result);
  });
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, policy: { defaultAction: defaultAction as SidecarAction, egress } };
}

export function capIssue(count: number): PolicyIssue {
  return issue(0, `at most ${MAX_RULES} rules`, `${count} rules`);
}

// ------------------------------------------------------------------ policy language form

const SUPPORTED: ReadonlySet<Rule["type"]> = new Set([
  "host",
  "wildcard_host",
  "ip",
  "cidr",
  "dns_host",
  "dns_wildcard_host",
]);

/** Source text of each rule of error-free policy text, in rule order. */
function sourceLines(text: string): string[] {
  const policy = parsePolicy(text);
  return policy.rules.map((_, index) => ruleSourceText(policy, index));
}

/** Parses policy-language text: allow rules, defaultAction deny; only network rule kinds. */
export function parseTextPolicy(text: string): ParseResult {
  const result = validatePolicy(text);
  const errors = [...result.errors];
  const lines = new Map(splitLines(text).map((line) => [line.number, line.text]));
  const egress: SidecarEntry[] = [];
  let sources: string[] | undefined;
  for (const [index, rule] of result.rules.entries()) {
    const lineText = lines.get(rule.line) ?? "";
    const firstColumn = columnAt(lineText, Math.max(0, lineText.search(/\S/)));
    const unsupported = (what: string, at = firstColumn) =>
      errors.push({
        line: rule.line,
        column: at,
        message: `${what} not supported in sidecar mode`,
        text: lineText,
      });
    if (!SUPPORTED.has(rule.type)) {
      unsupported(`${rule.type} rules are`);
      continue;
    }
    const attrKeys = Object.keys(rule.attrs);
    if (attrKeys.length > 0) {
      const at = lineText.indexOf(`${attrKeys[0]}=`);
      unsupported(`attributes (${attrKeys.join(", ")}) are`, at >= 0 ? columnAt(lineText, at) : firstColumn);
      continue;
    }
    if (rule.passthrough || rule.insecure) {
      const flag = rule.passthrough ? "passthrough" : "insecure";
      const at = lineText.indexOf(flag);
      unsupported(`"${flag}" is`, at >= 0 ? columnAt(lineText, at) : firstColumn);
      continue;
    }
    const dns = rule.type === "dns_host" || rule.type === "dns_wildcard_host";
    const entry: SidecarEntry = { action: "allow", target: dns ? `dns:${rule.target}` : rule.target };
    if (result.errors.length === 0) entry.source = (sources ??= sourceLines(text))[index];
    if (!dns) {
      entry.ports = rule.port === "*" ? "*" : [...rule.port];
      entry.protocol = rule.protocol;
    }
    egress.push(entry);
  }
  errors.sort((a, b) => a.line - b.line || a.column - b.column);
  if (errors.length > 0) return { ok: false, errors };
  if (egress.length > MAX_RULES) return { ok: false, errors: [capIssue(egress.length)] };
  return { ok: true, policy: { defaultAction: "deny", egress } };
}

/** Parses a request or file body by its format; an empty (blank) body is deny-all. */
export function parsePolicyBody(text: string, format: "json" | "text"): ParseResult {
  if (text.trim() === "") return { ok: true, policy: { defaultAction: "deny", egress: [] } };
  return format === "json" ? parseJsonPolicy(text) : parseTextPolicy(text);
}

// ------------------------------------------------------------------ edits

/** PATCH: adds entries, replacing entries with the same target; `defaultAction` of the patch wins. */
export function patchPolicy(
  current: SidecarPolicy,
  patch: SidecarPolicy,
  patchSetsDefault: boolean,
): ParseResult {
  const replaced = new Set(patch.egress.map((e) => targetKey(e.target)));
  const egress = [...current.egress.filter((e) => !replaced.has(targetKey(e.target))), ...patch.egress];
  if (egress.length > MAX_RULES) return { ok: false, errors: [capIssue(egress.length)] };
  return {
    ok: true,
    policy: { defaultAction: patchSetsDefault ? patch.defaultAction : current.defaultAction, egress },
  };
}

/** DELETE: removes the entries with these targets. */
export function deleteTargets(current: SidecarPolicy, targets: readonly string[]): SidecarPolicy {
  const gone = new Set(targets.map(targetKey));
  return {
    defaultAction: current.defaultAction,
    egress: current.egress.filter((e) => !gone.has(targetKey(e.target))),
  };
}

/** The API's JSON view (key order action, target, ports, protocol). */
export function policyToJson(policy: SidecarPolicy): SidecarPolicy {
  return {
    defaultAction: policy.defaultAction,
    egress: policy.egress.map((e) => ({
      action: e.action,
      target: e.target,
      ...(e.ports !== undefined ? { ports: e.ports === "*" ? "*" as const : [...e.ports] } : {}),
      ...(e.protocol !== undefined ? { protocol: e.protocol } : {}),
    })),
  };
}

// ------------------------------------------------------------------ compiled form

export function compilePolicy(policy: SidecarPolicy): CompiledPolicy {
  const entries: CompiledEntry[] = [];
  const counts = { allow: 0, deny: 0 };
  policy.egress.forEach((entry, index) => {
    counts[entry.action]++;
    const classified = classifyTarget(entry.target);
    // Entries reach here only through the parsers above; a bad one is a programming error.
    if (typeof classified === "string") throw new Error(`Cannot compile sidecar policy: ${classified}`);
    const ports = entry.ports === undefined || entry.ports === "*" ? [] : [...new Set(entry.ports)];
    const shape: KeyShape = ports.length > 0 ? "port" : entry.protocol !== undefined ? "proto" : "addr";
    entries.push({
      entry,
      index,
      kind: classified.kind,
      pattern: classified.kind === "address" ? undefined : entry.target.replace(/^dns:/, "").toLowerCase(),
      range: classified.range,
      shape,
      protocols: entry.protocol !== undefined ? [entry.protocol] : ["tcp", "udp"],
      ports,
    });
  });
  return { policy, entries, counts };
}

/** policy.md §10.6 name check only (no resolver check); deny beats allow; else defaultAction. */
export function judgeName(compiled: CompiledPolicy, queryName: string): NameVerdict {
  const name = normalizeHostname(queryName);
  let allowEntry: CompiledEntry | undefined;
  const grants: CompiledEntry[] = [];
  for (const entry of compiled.entries) {
    if (entry.pattern === undefined || !hostPatternMatches(entry.pattern, name)) continue;
    if (entry.entry.action === "deny") {
      return { policy: "deny", entry, grants: [], reason: "rule matched" };
    }
    allowEntry ??= entry;
    if (entry.kind === "host" || entry.kind === "wildcard_host") grants.push(entry);
  }
  if (allowEntry !== undefined) return { policy: "allow", entry: allowEntry, grants };
  if (compiled.policy.defaultAction === "allow") return { policy: "allow", grants: [] };
  return { policy: "deny", grants: [], reason: "name not allowed" };
}
