// A small strict flag parser shared by every `egress` command. No external dependency.
//
// Long flags (`--repo X`, `--repo=X`), short aliases (`-q`), booleans, repeatable flags,
// `--` ends the flags, `-` is a positional (stdin). Anything unknown or malformed is a
// UsageError whose message names the offending argument.

/** A user error that ends the command with one line on stderr and the given exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

/** Wrong command line: exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
    this.name = "UsageError";
  }
}

/** `boolean`: present or not; `string`: one value; `strings`: repeatable, every value kept. */
export type FlagKind = "boolean" | "string" | "strings";
export type FlagSpec = { kind: FlagKind; short?: string };
export type FlagSpecs = Record<string, FlagSpec>;

type FlagValue<S extends FlagSpec> = S["kind"] extends "boolean" ? boolean
  : S["kind"] extends "strings" ? string[]
  : string | undefined;

export type ParsedArgs<S extends FlagSpecs> = {
  flags: { [K in keyof S]: FlagValue<S[K]> };
  positionals: string[];
};

/**
 * Parses `argv` against `specs` (keys are the long names without `--`).
 * @throws UsageError for an unknown flag, a missing or unexpected value, or a repeated single flag.
 */
export function parseArgs<S extends FlagSpecs>(argv: readonly string[], specs: S): ParsedArgs<S> {
  const flags: Record<string, boolean | string | string[] | undefined> = {};
  const shortNames = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    flags[name] = spec.kind === "boolean" ? false : spec.kind === "strings" ? [] : undefined;
    if (spec.short !== undefined) shortNames.set(spec.short, name);
  }
  const seen = new Set<string>();
  const positionals: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-" || !arg.startsWith("-")) {
      positionals.push(arg);
      continue;
    }

    let name: string;
    let inlineValue: string | undefined;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      inlineValue = eq === -1 ? undefined : arg.slice(eq + 1);
      if (!Object.hasOwn(specs, name)) throw new UsageError(`unknown flag "--${name}"`);
    } else {
      const short = arg.slice(1);
      const long = shortNames.get(short);
      if (long === undefined) throw new UsageError(`unknown flag "${arg}"`);
      name = long;
    }
    const spec = specs[name];
    const shown = arg.startsWith("--") ? `--${name}` : arg;

    if (spec.kind === "boolean") {
      if (inlineValue !== undefined) throw new UsageError(`flag ${shown} takes no value`);
      flags[name] = true;
      continue;
    }

    let value = inlineValue;
    if (value === undefined) {
      const next = argv[i + 1];
      // A following flag is not taken as a value: `--repo --json` is almost surely a mistake.
      if (next === undefined || (next.startsWith("--") && next.length > 2)) {
        throw new UsageError(`flag ${shown} needs a value`);
      }
      value = next;
      i++;
    }
    if (spec.kind === "strings") {
      (flags[name] as string[]).push(value);
    } else {
      if (seen.has(name)) throw new UsageError(`flag ${shown} given more than once`);
      flags[name] = value;
    }
    seen.add(name);
  }
  return { flags: flags as ParsedArgs<S>["flags"], positionals };
}
