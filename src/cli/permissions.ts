// `egress permissions LOG [--json]` (cli.md §permissions): the minimal `permissions:` block for
// the job's GitHub token, from the log lines tagged `github_token: true`.

import { computePermissions, formatPermissions, formatUnknown } from "../tools/permissions.ts";
import type { TokenRequest } from "../tools/permissions.ts";
import { parseArgs, UsageError } from "./args.ts";
import { readConnectionLog } from "./connection_log.ts";

export const PERMISSIONS_USAGE = `Usage: egress permissions LOG [--json]

Prints the minimal "permissions:" block for the job's GitHub token, from the requests of a
connection log that carried it (lines with "github_token": true, written by egress start when
EGRESS_GITHUB_TOKEN is set). Requests whose permission is unknown are listed on stderr.

Options:
  --json       print {"permissions", "notes", "unknown", "tagged"} as JSON
  -h, --help   this help

Exit: 0 (also when nothing was tagged), 2 usage or unreadable file.`;

const FLAGS = {
  json: { kind: "boolean" },
  help: { kind: "boolean", short: "h" },
} as const;

export const NO_TAGGED_MESSAGE =
  '# No request in this log carried the job\'s GitHub token (no line has "github_token": true).\n' +
  "# egress tags requests to api.github.com, uploads.github.com and the OIDC token URL when it runs\n" +
  "# with the token (EGRESS_GITHUB_TOKEN; the action passes it): record a log that way, then run this again.";

export async function runPermissions(argv: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (flags.help) {
    console.log(PERMISSIONS_USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? "LOG is required" : `expected one LOG, got ${positionals.length}`,
    );
  }
  const file = positionals[0];
  const log = await readConnectionLog(file);
  for (const problem of log.problems) {
    console.error(`${file}:${problem.lineNumber}: warning: skipped line: ${problem.reason}`);
  }
  const result = computePermissions(log.entries.map((e) => e.event as TokenRequest));
  if (flags.json) {
    console.log(JSON.stringify({
      permissions: result.permissions,
      notes: result.notes,
      unknown: result.unknown,
      tagged: result.tagged,
      ...(result.tagged === 0 ? { message: "no request in this log carried the job's GitHub token" } : {}),
    }));
  } else if (result.tagged === 0) {
    console.log(NO_TAGGED_MESSAGE);
  } else {
    console.log(formatPermissions(result).trimEnd());
  }
  const unknown = formatUnknown(result);
  if (unknown !== "" && !flags.json) console.error(unknown.trimEnd());
  return 0;
}
