// `egress suggest --log FILE [--scope auto|none|LIST] [--hosts] [--no-defaults]` (cli.md §suggest):
// prints the tightest policy that allows every connection of a (usually audit) log.

import { parseScope, suggestPolicy } from "../tools/suggest.ts";
import { parseArgs, UsageError } from "./args.ts";
import { readConnectionLog } from "./connection_log.ts";

export const SUGGEST_USAGE = `Usage: egress suggest --log FILE [options]

Prints the tightest policy that allows every connection in a connection log (usually one recorded
with --audit). Requests become URL rules (varying ids, versions and hashes collapsed to "*"),
other connections host, IP and DNS rules, each commented with the step and process it came from.
Connections the built-in rules allow, failed ones and unattributed ones are left out (the
unattributed are listed as comments). "-" reads the log from stdin.

Options:
  --log FILE           connection log (JSON Lines) (required)
  --scope SCOPE        auto (default: step, action and exe where known), none, or a comma list
                       of step, action, exe; step/action go into headers, exe onto rules
  --hosts              host rules instead of URL rules for requests
  --no-defaults        for a policy used without the built-in runner rules
  -h, --help           this help

Exit: 0 ok, 1 no valid suggestion could be made, 2 usage or unreadable file.`;

const FLAGS = {
  log: { kind: "string" },
  scope: { kind: "string" },
  hosts: { kind: "boolean" },
  "no-defaults": { kind: "boolean" },
  help: { kind: "boolean", short: "h" },
} as const;

export async function runSuggest(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(SUGGEST_USAGE);
    return 0;
  }
  if (flags.log === undefined) throw new UsageError("--log FILE is required");
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  let scope;
  try {
    scope = parseScope(flags.scope ?? "auto");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const log = await readConnectionLog(flags.log);
  for (const problem of log.problems) {
    console.error(`${flags.log}:${problem.lineNumber}: warning: skipped line: ${problem.reason}`);
  }
  const text = suggestPolicy(log.entries.map((e) => e.event), {
    scope,
    hosts: flags.hosts,
    noDefaults: flags["no-defaults"],
    source: flags.log === "-" ? "<stdin>" : flags.log,
  });
  console.log(text.trimEnd());
  return 0;
}
