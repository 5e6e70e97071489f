// The few GitHub Actions runner conventions the action needs, without @actions/core: inputs from
// INPUT_* variables, workflow commands on stdout, and the GITHUB_ENV / GITHUB_STATE /
// GITHUB_STEP_SUMMARY files. Node only.

import { appendFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import process from "node:process";

/** `INPUT_<NAME>` as the runner sets it (upper case, spaces → `_`, hyphens kept), trimmed. */
export function getInput(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
}

/** Booleans: true/false in any case; empty means the default; anything else is an error. */
export function parseBooleanInput(name: string, text: string, fallback: boolean): boolean {
  if (text === "") return fallback;
  if (/^true$/i.test(text)) return true;
  if (/^false$/i.test(text)) return false;
  throw new InputError(`input ${name} must be true or false`);
}

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InputError";
  }
}

function escapeData(text: string): string {
  return text.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

function escapeProperty(text: string): string {
  return escapeData(text).replace(/:/g, "%3A").replace(/,/g, "%2C");
}

export type AnnotationProperties = { title?: string; file?: string; line?: number; col?: number };

/** `::error title=…::message` (and `warning`, `notice`). */
export function annotation(
  kind: "error" | "warning" | "notice",
  message: string,
  properties: AnnotationProperties = {},
): string {
  const props = Object.entries(properties)
    .filter(([, value]) => value !== undefined && value !== "")
    .map(([key, value]) => `${key}=${escapeProperty(String(value))}`)
    .join(",");
  return `::${kind}${props ? " " + props : ""}::${escapeData(message)}`;
}

export function emit(line: string): void {
  process.stdout.write(line + "\n");
}

/** `NAME<<delimiter` blocks, safe for any value. */
function fileCommand(name: string, value: string): string {
  const delimiter = `egress_${randomBytes(12).toString("hex")}`;
  if (value.includes(delimiter) || name.includes(delimiter)) {
    throw new Error("Cannot write a file command: bad delimiter");
  }
  return `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
}

function appendTo(variable: string, text: string, env: NodeJS.ProcessEnv): void {
  const path = env[variable];
  if (!path) throw new Error(`Cannot write ${variable}: it is not set`);
  appendFileSync(path, text, "utf8");
}

/** Exports a variable to the job's later steps. */
export function exportVariable(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendTo("GITHUB_ENV", fileCommand(name, value), env);
}

/** Sets a step output (`steps.<id>.outputs.<name>`) for the workflow's later expressions. */
export function setOutput(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendTo("GITHUB_OUTPUT", fileCommand(name, value), env);
}

/** Saves state for this action's later entry points (read back as STATE_<name>). */
export function saveState(name: string, value: string, env: NodeJS.ProcessEnv = process.env): void {
  appendTo("GITHUB_STATE", fileCommand(name, value), env);
}

export function getState(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[`STATE_${name}`] ?? "";
}

export function appendSummary(markdown: string, env: NodeJS.ProcessEnv = process.env): void {
  appendTo("GITHUB_STEP_SUMMARY", markdown.endsWith("\n") ? markdown : markdown + "\n", env);
}

/** Prevents a value from appearing in the job log. */
export function setSecret(value: string): void {
  if (value) emit(`::add-mask::${escapeData(value)}`);
}
