// Attribute matching against the process that opened a connection (policy.md §4). Pure.
import type { AttrValue, ConnectionEvent } from "./types.ts";
import { compileGlob } from "./glob.ts";

export type AttributePredicate = (event: ConnectionEvent) => boolean;

const ARG_INDEX = /^arg\[([0-9]+)\]$/;

function valueMatcher(value: AttrValue): (actual: string) => boolean {
  if (typeof value === "string") return compileGlob(value).matches;
  if (value.literal) {
    const exact = value.value;
    return (actual) => actual === exact;
  }
  return compileGlob(value.value).matches;
}

function cgroupMatcher(value: AttrValue): (actual: string) => boolean {
  // The shortcuts apply to unquoted and backtick values only; `cgroup="@docker"` is a literal path.
  const text = typeof value === "string" ? value : value.literal ? undefined : value.value;
  if (text === "@docker") return (actual) => actual.toLowerCase().includes("docker");
  if (text === "@host") return (actual) => !actual.toLowerCase().includes("docker");
  return valueMatcher(value);
}

const NEVER: AttributePredicate = () => false;

function attributePredicate(key: string, value: AttrValue): AttributePredicate {
  if (key === "arg") {
    const matches = valueMatcher(value);
    return (event) => event.cmdline !== undefined && event.cmdline.some((arg) => matches(arg));
  }
  const argIndex = ARG_INDEX.exec(key);
  if (argIndex) {
    const n = Number(argIndex[1]);
    const matches = valueMatcher(value);
    return (event) => {
      const arg = event.cmdline?.[n];
      return arg !== undefined && matches(arg);
    };
  }
  const field = key === "exe" || key === "step" || key === "action" || key === "image" || key === "cgroup"
    ? key
    : undefined;
  // An attribute this matcher does not know cannot be verified, so the rule fails closed.
  if (field === undefined) return NEVER;
  const matches = field === "cgroup" ? cgroupMatcher(value) : valueMatcher(value);
  return (event) => {
    const actual = event[field];
    return typeof actual === "string" && matches(actual);
  };
}

/** Compiles a rule's attributes once; the predicate holds iff every attribute matches. */
export function compileAttributes(attrs: Readonly<Record<string, AttrValue>>): AttributePredicate {
  const predicates = Object.entries(attrs).map(([key, value]) => attributePredicate(key, value));
  if (predicates.length === 0) return () => true;
  if (predicates.length === 1) return predicates[0];
  return (event) => predicates.every((predicate) => predicate(event));
}

/** One-shot form of `compileAttributes`. */
export function attributesMatch(attrs: Readonly<Record<string, AttrValue>>, event: ConnectionEvent): boolean {
  return compileAttributes(attrs)(event);
}
