// Reads a connection log (JSON Lines, events.md §3). Malformed lines are reported with their line
// number and skipped; the rest is returned. `parseConnectionLog` is pure; `readConnectionLog`
// is the thin file read.

import { CliError } from "./args.ts";

export type LogType = "http" | "https" | "tcp" | "udp" | "dns" | "dns_response" | "sudo";
const LOG_TYPES: ReadonlySet<string> = new Set([
  "http",
  "https",
  "tcp",
  "udp",
  "dns",
  "dns_response",
  "sudo",
]);

/** The fields of a log line the CLI uses; others are kept as they are in `raw`. */
export type LogEvent = {
  type: LogType;
  ts?: string;
  dst_ip?: string;
  dst_port?: number;
  src_port?: number;
  host?: string | null;
  url?: string;
  method?: string;
  name?: string;
  answers?: string[];
  ttl?: number;
  policy?: "allow" | "deny";
  rule?: string;
  line?: number;
  reason?: string;
  error?: string;
  audit?: true;
  passthrough?: true;
  insecure?: true;
  pid?: number;
  exe?: string;
  cmdline?: string[];
  cgroup?: string;
  image?: string;
  step?: string;
  action?: string;
};

export type LogEntry = { /** 1-based line in the log file */ lineNumber: number; event: LogEvent };
export type LogProblem = { lineNumber: number; reason: string };
export type ParsedLog = { entries: LogEntry[]; problems: LogProblem[] };

const STRING_FIELDS = [
  "ts",
  "dst_ip",
  "url",
  "method",
  "name",
  "rule",
  "reason",
  "error",
  "exe",
  "cgroup",
  "image",
  "step",
  "action",
] as const;
const PORT_FIELDS = ["dst_port", "src_port"] as const;

/** Splits at \n (and \r\n); blank lines are ignored silently. */
export function parseConnectionLog(text: string): ParsedLog {
  const entries: LogEntry[] = [];
  const problems: LogProblem[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (raw.trim() === "") continue;
    const lineNumber = i + 1;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      // The parser's message quotes the line; a log line can be long, so the reason stays short.
      problems.push({ lineNumber, reason: "not valid JSON" });
      continue;
    }
    const reason = checkLogLine(value);
    if (reason !== undefined) problems.push({ lineNumber, reason });
    else entries.push({ lineNumber, event: value as LogEvent });
  }
  return { entries, problems };
}

/** Undefined when `value` is a usable log line, else why not. */
function checkLogLine(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const o = value as Record<string, unknown>;
  if (typeof o.type !== "string") return 'missing "type"';
  if (!LOG_TYPES.has(o.type)) return `unknown type ${JSON.stringify(o.type)}`;
  for (const key of STRING_FIELDS) {
    if (key in o && typeof o[key] !== "string") return `"${key}" must be a string`;
  }
  for (const key of PORT_FIELDS) {
    if (key in o && !isPort(o[key])) return `"${key}" must be an integer 0..65535`;
  }
  if ("host" in o && o.host !== null && typeof o.host !== "string") return '"host" must be a string or null';
  if ("cmdline" in o && !isStringArray(o.cmdline)) return '"cmdline" must be an array of strings';
  if ("answers" in o && !isStringArray(o.answers)) return '"answers" must be an array of strings';
  if ("ttl" in o && !(Number.isInteger(o.ttl) && (o.ttl as number) >= 0)) {
    return '"ttl" must be a non-negative integer';
  }
  if ("line" in o && !(Number.isInteger(o.line) && (o.line as number) >= 0)) {
    return '"line" must be a non-negative integer';
  }
  if (o.type === "sudo") return undefined;
  if (typeof o.dst_ip !== "string") return `missing "dst_ip" on a ${o.type} line`;
  if (!("dst_port" in o)) return `missing "dst_port" on a ${o.type} line`;
  if ((o.type === "dns" || o.type === "dns_response") && typeof o.name !== "string") {
    return `missing "name" on a ${o.type} line`;
  }
  if (o.type === "dns_response" && (!("answers" in o) || !("ttl" in o))) {
    return 'dns_response needs "answers" and "ttl"';
  }
  if ("url" in o && o.type !== "http" && o.type !== "https") return `"url" on a ${o.type} line`;
  return undefined;
}

function isPort(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
}

function isStringArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

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
