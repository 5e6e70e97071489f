// Reads a connection log (JSON Lines, events.md §3): the thin file read around the pure
// `parseConnectionLog`, which lives with the log line types in `src/tools/replay.ts`.

import { parseConnectionLog } from "../tools/replay.ts";
import type { ParsedLog } from "../tools/replay.ts";
import { CliError } from "./args.ts";

export { parseConnectionLog };
export type { LogEntry, LogEvent, LogProblem, LogType, ParsedLog } from "../tools/replay.ts";

/** Reads and parses a log file; `-` reads stdin. @throws CliError (exit 2) when unreadable. */
export async function readConnectionLog(path: string): Promise<ParsedLog> {
  let text: string;
  try {
    text = await readUtf8(path);
  } catch (e) {
    throw new CliError(`Cannot read log ${path}: ${describeFsError(e)}`, 2);
  }
  return parseConnectionLog(text);
}

/** Reads a file (`-` = stdin) as strict UTF-8: a file that is not text is an error, not mojibake. */
export async function readUtf8(path: string): Promise<string> {
  const bytes = path === "-" ? await new Response(Deno.stdin.readable).bytes() : await Deno.readFile(path);
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}

export function describeFsError(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "is a directory";
  if (e instanceof TypeError && /utf-8|decode|encoded data/i.test(e.message)) return "not UTF-8 text";
  return e instanceof Error ? e.message : String(e);
}
