// sudo's own log file (`Defaults logfile=…`, written with allow-sudo) → `sudo` connection-log events
// (runner.md §5, events.md). Pure: no Deno API.
//
// An entry looks like
//   Dec  1 18:40:02 : runner : TTY=unknown ; PWD=/home/runner/work ; USER=root ;
//       COMMAND=/usr/bin/apt-get install -y jq
// where sudo wraps long entries onto continuation lines that start with white space.

import type { ConnectionLogEvent } from "../log/connection_log.ts";

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** Joins continuation lines (leading white space) onto the entry before them. */
export function joinSudoLogEntries(text: string): string[] {
  const entries: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "") continue;
    if (/^\s/.test(line) && entries.length > 0) {
      entries[entries.length - 1] = `${entries[entries.length - 1].trimEnd()} ${line.trim()}`;
    } else {
      entries.push(line.trimEnd());
    }
  }
  return entries;
}

/** `Mon DD HH:MM:SS` (UTC, the given year) → ISO 8601 with milliseconds; undefined if malformed. */
export function sudoTimestamp(text: string, year: number): string | undefined {
  const match = /^([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})$/.exec(text.trim());
  if (!match) return undefined;
  const month = MONTHS.indexOf(match[1]);
  const [day, hours, minutes, seconds] = match.slice(2).map(Number);
  if (month < 0 || day < 1 || day > 31 || hours > 23 || minutes > 59 || seconds > 60) return undefined;
  const date = new Date(Date.UTC(year, month, day, hours, minutes, seconds));
  return date.getUTCDate() === day ? date.toISOString() : undefined; // Feb 30 does not roll over
}

/**
 * POSIX-shell-like word splitting (quotes and backslashes, no expansion); undefined when a quote
 * is left open, so the caller can fall back to splitting on white space.
 */
export function shellSplit(text: string): string[] | undefined {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) return undefined;
      word += text.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < text.length && text[j] !== '"'; j++) {
        if (text[j] === "\\" && j + 1 < text.length && '"\\$`'.includes(text[j + 1])) j++;
        word += text[j];
      }
      if (j >= text.length) return undefined;
      i = j;
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 < text.length) word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** One entry → a `sudo` event; undefined for entries without `COMMAND` or with a bad time. */
export function parseSudoEntry(entry: string, year: number): ConnectionLogEvent | undefined {
  const parts = entry.split(" : ");
  if (parts.length < 3) return undefined;
  const ts = sudoTimestamp(parts[0], year);
  if (!ts) return undefined;
  const fieldText = parts.slice(2).join(" : ");
  const fields = new Map<string, string>();
  const pieces = fieldText.split(" ; ");
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i].trim();
    const eq = piece.indexOf("=");
    if (eq <= 0) continue;
    const key = piece.slice(0, eq);
    if (key === "COMMAND") {
      // The command is last and may itself contain " ; ".
      fields.set(key, [piece.slice(eq + 1), ...pieces.slice(i + 1)].join(" ; ").replace(/\s*;$/, "").trim());
      break;
    }
    fields.set(key, piece.slice(eq + 1).replace(/\s*;$/, "").trim());
  }
  const command = fields.get("COMMAND");
  if (!command) return undefined;
  const cmdline = shellSplit(command) ?? command.split(/\s+/).filter(Boolean);
  if (cmdline.length === 0) return undefined;
  const event: ConnectionLogEvent = { ts, type: "sudo" };
  const pwd = fields.get("PWD");
  const targetUser = fields.get("USER");
  if (pwd) event.pwd = pwd;
  if (targetUser) event.target_user = targetUser;
  event.cmdline = cmdline;
  return event;
}

/** The whole log → events in file order (entries without COMMAND are dropped). */
export function parseSudoLog(text: string, year: number): ConnectionLogEvent[] {
  const events: ConnectionLogEvent[] = [];
  for (const entry of joinSudoLogEntries(text)) {
    const event = parseSudoEntry(entry, year);
    if (event) events.push(event);
  }
  return events;
}
