// Control socket protocol (runner.md §5): the client sends one line of at most 256 bytes within
// 5 s; the server answers one line and closes. Pure: no Deno API.

export const MAX_REQUEST_BYTES = 256;
export const REQUEST_TIMEOUT_MS = 5000;

export type ControlCommand = "status" | "shutdown" | "reload";

export const CONTROL_COMMANDS: readonly ControlCommand[] = ["status", "shutdown", "reload"];

/** The `status` reply body (after `ok: `). */
export type StatusReply = {
  mode: "enforce" | "audit";
  state: "running" | "degraded";
  rules: number;
  restarts: number;
  counters: { allowed: number; denied: number; dns: number; errors: number };
};

/** A parsed reply line: `ok: …` or `error: …`. */
export type ControlReply = { ok: boolean; text: string };

/** Splits a request line into the command word and its arguments (whitespace separated). */
export function parseRequest(line: string): { command: string; args: string[] } {
  const words = line.trim().split(/\s+/).filter((word) => word !== "");
  return { command: words[0] ?? "", args: words.slice(1) };
}

export function okLine(text: string): string {
  return `ok: ${text}`;
}

export function errorLine(text: string): string {
  return `error: ${text}`;
}

/** Parses one reply line; anything that is neither `ok:` nor `error:` is an error reply. */
export function parseReply(line: string): ControlReply {
  const trimmed = line.replace(/\r?\n$/, "");
  if (trimmed.startsWith("ok:")) return { ok: true, text: trimmed.slice(3).trimStart() };
  if (trimmed.startsWith("error:")) return { ok: false, text: trimmed.slice(6).trimStart() };
  return { ok: false, text: `unexpected reply ${JSON.stringify(trimmed.slice(0, 200))}` };
}

/** Parses and checks the JSON body of a `status` reply; throws on a malformed one. */
export function parseStatus(text: string): StatusReply {
  const value = JSON.parse(text) as StatusReply;
  if (
    value === null || typeof value !== "object" ||
    (value.mode !== "enforce" && value.mode !== "audit") ||
    (value.state !== "running" && value.state !== "degraded") ||
    typeof value.rules !== "number" || typeof value.counters !== "object" || value.counters === null
  ) {
    throw new Error("Cannot read status: the reply does not have the expected fields");
  }
  return value;
}
