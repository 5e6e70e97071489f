// The policy library entry points (policy.md §13): parsePolicy, validatePolicy, Policy, PolicyError.
// Pure: no Deno, no node:.

import { RUNNER_BUILTIN_TEXT, RUNNER_CGROUP } from "./builtins.ts";
import { compiledRules } from "./matcher.ts";
import { type ParsedPolicy, parsePolicyText, resolveDefaults } from "./parse.ts";
import type { ConnectionEvent, PolicyIssue, PolicyOptions, Rule, RuleMatch } from "./types.ts";

/** Thrown by `parsePolicy` when the text has errors; `issues` holds every error. */
export class PolicyError extends Error {
  readonly issues: PolicyIssue[];
  constructor(issues: PolicyIssue[]) {
    const first = issues[0];
    const more = issues.length > 1
      ? ` (and ${issues.length - 1} more error${issues.length > 2 ? "s" : ""})`
      : "";
    super(
      first === undefined
        ? "Cannot parse policy"
        : `Cannot parse policy: line ${first.line}, column ${first.column}: ${first.message}${more}`,
    );
    this.name = "PolicyError";
    this.issues = issues;
  }
}

const sourceTexts = new WeakMap<Policy, readonly string[]>();

function copyRule(rule: Rule): Rule {
  const copy: Rule = {
    type: rule.type,
    target: rule.target,
    port: rule.port === "*" ? "*" : [...rule.port],
    protocol: rule.protocol,
    methods: rule.methods === null ? null : [...rule.methods],
    url_base: rule.url_base,
    attrs: Object.fromEntries(
      Object.entries(rule.attrs).map((
        [k, v],
      ) => [k, typeof v === "string" ? v : { value: v.value, literal: v.literal }]),
    ),
    line: rule.line,
  };
  // Re-insert the flags before `line` so that the JSON keys keep the §8 order.
  if (rule.passthrough || rule.insecure) {
    const { line, ...rest } = copy;
    return {
      ...rest,
      ...(rule.passthrough ? { passthrough: true as const } : {}),
      ...(rule.insecure ? { insecure: true as const } : {}),
      line,
    };
  }
  return copy;
}

function frozenRule(rule: Rule): Rule {
  const copy = copyRule(rule);
  if (Array.isArray(copy.port)) Object.freeze(copy.port);
  if (copy.methods !== null) Object.freeze(copy.methods);
  for (const value of Object.values(copy.attrs)) if (typeof value !== "string") Object.freeze(value);
  Object.freeze(copy.attrs);
  return Object.freeze(copy);
}

/** A parsed policy: the flattened rules (built-ins first) and the warnings found. */
export class Policy {
  readonly rules: readonly Rule[];
  readonly warnings: readonly PolicyIssue[];

  constructor(rules: readonly Rule[], warnings: readonly PolicyIssue[] = []) {
    this.rules = Object.freeze(rules.map(frozenRule));
    this.warnings = Object.freeze(warnings.map((w) => Object.freeze({ ...w })));
  }

  /** First matching rule (§10.2, dual check for dns events); no DNS cache, no corroboration. */
  match(event: ConnectionEvent): RuleMatch | undefined {
    return compiledRules(this.rules).match(event);
  }

  toJSON(): Rule[] {
    return this.rules.map(copyRule);
  }
}

/**
 * Source line of rule `index` (trimmed, inline comment removed; built-ins: their line of the
 * built-in text). Internal: the daemon logs it as the `rule` field.
 */
export function ruleSourceText(policy: Policy, index: number): string {
  const sources = sourceTexts.get(policy);
  if (sources !== undefined && index >= 0 && index < sources.length) return sources[index];
  const rule = policy.rules[index];
  if (rule === undefined) {
    throw new RangeError(`Cannot find rule ${index}: the policy has ${policy.rules.length} rules`);
  }
  return rule.target;
}

function parseAll(text: string, options: PolicyOptions | undefined): ParsedPolicy {
  if (typeof text !== "string") throw new TypeError("Cannot parse policy: the policy text must be a string");
  const defaults = resolveDefaults(options, RUNNER_CGROUP);
  const user = parsePolicyText(text, defaults, options?.repository);
  if (options?.runner !== true) return user;
  const builtinDefaults = { ...resolveDefaults(undefined, RUNNER_CGROUP), attrs: { cgroup: RUNNER_CGROUP } };
  const builtins = parsePolicyText(RUNNER_BUILTIN_TEXT, builtinDefaults, undefined, true);
  return {
    rules: [...builtins.rules, ...user.rules],
    sources: [...builtins.sources, ...user.sources],
    errors: user.errors,
    warnings: user.warnings,
  };
}

/** Parses policy text; throws PolicyError (all errors) if there is any error. */
export function parsePolicy(text: string, options?: PolicyOptions): Policy {
  const parsed = parseAll(text, options);
  if (parsed.errors.length > 0) throw new PolicyError(parsed.errors);
  const policy = new Policy(parsed.rules, parsed.warnings);
  sourceTexts.set(policy, Object.freeze(parsed.sources));
  return policy;
}

/** Validates policy text without throwing (except TypeError for malformed options). */
export function validatePolicy(
  text: string,
  options?: PolicyOptions,
): { rules: Rule[]; errors: PolicyIssue[]; warnings: PolicyIssue[] } {
  const parsed = parseAll(text, options);
  return { rules: parsed.rules.map(copyRule), errors: parsed.errors, warnings: parsed.warnings };
}
