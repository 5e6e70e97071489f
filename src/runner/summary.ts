// Job summary (runner.md §10) and the artifact rule (§9). Pure: no Deno API, so the action's
// `post` (Node) renders the same text the tests check.

import type { LogEvent } from "../tools/replay.ts";

export const MAX_ROWS = 100;

export type SummaryOptions = {
  mode: "enforce" | "audit";
  /** `egress suggest` output for the log, or an explanation why there is none */
  suggestion?: string;
  /** extra lines under the heading (daemon state, shutdown problems) */
  notes?: string[];
};

/** Longest text a cell shows (the log keeps the full value). */
export const MAX_CELL_CHARS = 300;
/** The summary stays well under GitHub's 1 MiB per step; later step sections are counted instead. */
export const MAX_SUMMARY_CHARS = 512 * 1024;

/**
 * Text from the log (host names, URLs, exe paths, step names: all chosen by whatever ran in the job)
 * shown literally in Markdown: every ASCII character but letters, digits and space becomes a numeric
 * character reference, which Markdown decodes to text and never to markup (no `|` cell break, no
 * code-span end, no HTML, no link, no autolink); control and format characters (bidi overrides,
 * zero-width) are shown as `\u….`; long values are cut.
 */
export function literalText(text: string, maxChars = MAX_CELL_CHARS): string {
  const chars = Array.from(text);
  const shown = chars.length > maxChars ? [...chars.slice(0, maxChars), "…"] : chars;
  return shown.map((char) => {
    if (/^[A-Za-z0-9 ]$/.test(char)) return char;
    if (/^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}]$/u.test(char)) {
      return `&#92;u${char.codePointAt(0)!.toString(16).padStart(4, "0")}`;
    }
    if (char.codePointAt(0)! < 0x80) return `&#${char.codePointAt(0)};`;
    return char;
  }).join("");
}

/** A table cell (or heading part): literal text in monospace; empty stays empty. */
export function codeCell(text: string): string {
  return text === "" ? "" : `<code>${literalText(text)}</code>`;
}

function withoutQuery(url: string): string {
  const cut = url.search(/[?#]/);
  return cut < 0 ? url : url.slice(0, cut);
}

/** Destination column: URL without query, `host:port`, `ip:port/udp`, DNS name. */
export function destinationOf(event: LogEvent): string {
  if (event.url) return withoutQuery(event.url);
  if (event.type === "dns" || event.type === "dns_response") return event.name ?? "";
  const port = event.dst_port ?? 0;
  if (event.type === "udp") return `${event.dst_ip ?? "unknown"}:${port}/udp`;
  return `${event.host || event.dst_ip || "unknown"}:${port}`;
}

function processOf(event: LogEvent): string {
  const parts: string[] = [];
  if (event.exe) parts.push(event.exe);
  if (event.image) parts.push(`image ${event.image}`);
  return parts.join(", ");
}

type Row = { verdict: "deny" | "allow"; destination: string; process: string; action: string; count: number };

/** Lines that are verdicts on a connection (dns_response repeats its query's verdict). */
export function isVerdictLine(event: LogEvent): boolean {
  return event.type !== "sudo" && event.type !== "dns_response" && event.policy !== undefined;
}

export type Counts = { allowed: number; denied: number; errors: number };

export function countEvents(events: readonly LogEvent[]): Counts {
  const counts: Counts = { allowed: 0, denied: 0, errors: 0 };
  for (const event of events) {
    if (event.error) counts.errors++;
    if (!isVerdictLine(event)) continue;
    if (event.policy === "deny") counts.denied++;
    else counts.allowed++;
  }
  return counts;
}

function table(rows: Row[]): string[] {
  const lines = ["| Verdict | Destination | Process | Action | Count |", "|---|---|---|---|---|"];
  for (const row of rows.slice(0, MAX_ROWS)) {
    lines.push(
      `| ${row.verdict === "deny" ? "❌ denied" : "✅ allowed"} | ${codeCell(row.destination)} | ${
        codeCell(row.process)
      } | ${codeCell(row.action)} | ${row.count} |`,
    );
  }
  if (rows.length > MAX_ROWS) lines.push("", `… ${rows.length - MAX_ROWS} more`);
  return lines;
}

/** The longest run of backticks in `text` plus one (at least 3): a fence the text cannot close. */
function fenceFor(text: string): string {
  const longest = Math.max(0, ...Array.from(text.matchAll(/`+/g), (m) => m[0].length));
  return "`".repeat(Math.max(3, longest + 1));
}

/** The Markdown appended to $GITHUB_STEP_SUMMARY. */
export function renderJobSummary(events: readonly LogEvent[], options: SummaryOptions): string {
  const counts = countEvents(events);
  const out: string[] = [
    "## egress",
    "",
    `Mode: **${options.mode}** · allowed: **${counts.allowed}** · denied: **${counts.denied}** · errors: **${counts.errors}**` +
    (options.mode === "audit" ? " (audit mode: denied connections were let through)" : ""),
    "",
  ];
  for (const note of options.notes ?? []) out.push(`> ${note}`, "");

  const steps = new Map<string, Map<string, Row>>();
  for (const event of events) {
    if (!isVerdictLine(event)) continue;
    const step = event.step || "(no step)";
    const rows = steps.get(step) ?? new Map<string, Row>();
    steps.set(step, rows);
    const row: Row = {
      verdict: event.policy === "deny" ? "deny" : "allow",
      destination: destinationOf(event),
      process: processOf(event),
      action: event.action ?? "",
      count: 1,
    };
    const key = JSON.stringify([row.verdict, row.destination, row.process, row.action]);
    const existing = rows.get(key);
    if (existing) existing.count++;
    else rows.set(key, row);
  }
  // Steps with denials first, then in log order.
  const ordered = [...steps.entries()].sort(([, a], [, b]) =>
    Number([...b.values()].some((r) => r.verdict === "deny")) -
    Number([...a.values()].some((r) => r.verdict === "deny"))
  );
  let shownSteps = 0;
  for (const [step, rowMap] of ordered) {
    if (out.join("\n").length > MAX_SUMMARY_CHARS) break;
    shownSteps++;
    const rows = [...rowMap.values()];
    const denied = rows.filter((r) => r.verdict === "deny").sort((a, b) => b.count - a.count);
    const allowed = rows.filter((r) => r.verdict === "allow").sort((a, b) => b.count - a.count);
    out.push(`### Step ${codeCell(step)}`, "");
    if (denied.length > 0) out.push(...table(denied), "");
    if (allowed.length > 0) {
      const total = allowed.reduce((sum, r) => sum + r.count, 0);
      out.push(`<details><summary>${total} allowed (${allowed.length} destinations)</summary>`, "");
      out.push(...table(allowed), "", "</details>", "");
    }
  }
  if (shownSteps < ordered.length) {
    out.push(`… ${ordered.length - shownSteps} more steps (summary size limit; the log has every line)`, "");
  }
  if (steps.size === 0) out.push("No connections were logged.", "");

  const sudo = events.filter((event) => event.type === "sudo");
  if (sudo.length > 0) {
    out.push("### sudo", "", "| Time | Command | Directory | As |", "|---|---|---|---|");
    for (const event of sudo.slice(0, MAX_ROWS)) {
      out.push(
        `| ${literalText(event.ts ?? "")} | ${codeCell((event.cmdline ?? []).join(" "))} | ${
          codeCell((event as { pwd?: string }).pwd ?? "")
        } | ${codeCell((event as { target_user?: string }).target_user ?? "")} |`,
      );
    }
    if (sudo.length > MAX_ROWS) out.push("", `… ${sudo.length - MAX_ROWS} more`);
    out.push("");
  }

  if (options.suggestion !== undefined) {
    const fence = fenceFor(options.suggestion);
    out.push(
      "### Suggested policy",
      "",
      "> Review every line before pasting: this allows everything the job tried to reach, including what a " +
        "compromised step or dependency tried.",
      "",
      `${fence}yaml`,
      options.suggestion.trimEnd(),
      fence,
      "",
    );
  }
  return out.join("\n");
}

export type UploadSetting = "true" | "false" | "auto";

/** runner.md §9: `auto` uploads in audit mode or when any line was denied or has an error. */
export function shouldUploadLog(
  setting: UploadSetting,
  audit: boolean,
  events: readonly LogEvent[],
): boolean {
  if (setting === "true") return true;
  if (setting === "false") return false;
  return audit || events.some((event) => event.policy === "deny" || event.error !== undefined);
}
