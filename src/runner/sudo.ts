// sudo hardening on the runner (runner.md §5). The runner user's password-less sudo comes from
// /etc/sudoers.d/runner; disabling truncates that file after a one-time root-only backup, enabling
// and shutdown restore it. With allow-sudo the file stays and gains a `Defaults logfile` line, so
// every sudo use is recorded and becomes a `sudo` event at shutdown.

import type { SystemPaths } from "./paths.ts";

export const SUDOERS_BACKUP = "sudoers-runner.bak";
export const SUDO_LOG = "sudo.log";
/** Marks that the runner had no sudoers file, so shutdown must not create one. */
const MISSING_MARKER = "sudoers-runner.missing";

export type SudoTools = {
  /** `visudo -cf FILE`: undefined when valid, else the complaint */
  checkSudoers(path: string): Promise<string | undefined>;
  /** `sudo -l -U runner` output (undefined when it cannot be run) */
  listRunnerPrivileges(): Promise<string | undefined>;
};

async function output(argv: string[]): Promise<{ ok: boolean; text: string } | undefined> {
  try {
    const result = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" })
      .output();
    const decoder = new TextDecoder();
    return { ok: result.success, text: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
  } catch {
    return undefined; // not installed
  }
}

/** The real tools: visudo and sudo from PATH. */
export const systemSudoTools: SudoTools = {
  async checkSudoers(path) {
    const result = await output(["visudo", "-cf", path]);
    if (!result) return "visudo is not installed";
    return result.ok ? undefined : result.text.trim();
  },
  async listRunnerPrivileges() {
    return (await output(["sudo", "-n", "-l", "-U", "runner"]))?.text;
  },
};

export type SudoResult = { message: string; warnings: string[] };

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Copies the sudoers file to the state dir once (0600); later calls keep the first copy. */
export async function backUpSudoers(
  paths: SystemPaths,
  stateDir: string,
): Promise<"backed-up" | "kept" | "missing"> {
  const backup = `${stateDir}/${SUDOERS_BACKUP}`;
  if (await exists(backup) || await exists(`${stateDir}/${MISSING_MARKER}`)) return "kept";
  if (!(await exists(paths.sudoersRunner))) {
    await Deno.writeTextFile(`${stateDir}/${MISSING_MARKER}`, "", { mode: 0o600 });
    return "missing";
  }
  const content = await Deno.readFile(paths.sudoersRunner);
  const temporary = `${backup}.tmp`;
  await Deno.writeFile(temporary, content, { mode: 0o600 });
  await Deno.chmod(temporary, 0o600);
  await Deno.rename(temporary, backup);
  return "backed-up";
}

/** Lines of `sudo -l` output that grant commands ("(root) NOPASSWD: ALL" and the like). */
export function grantedCommands(listing: string): string[] {
  const lines = listing.split("\n");
  const start = lines.findIndex((line) => /may run the following commands/.test(line));
  if (start < 0) return [];
  return lines.slice(start + 1).map((line) => line.trim()).filter((line) => line.startsWith("("));
}

/** disable-sudo: back up once, truncate; warn if sudo still lists commands for runner. */
export async function disableSudo(
  paths: SystemPaths,
  stateDir: string,
  tools: SudoTools,
): Promise<SudoResult> {
  const warnings: string[] = [];
  const backup = await backUpSudoers(paths, stateDir);
  let message = "sudo disabled";
  if (backup === "missing" || !(await exists(paths.sudoersRunner))) {
    message = `sudo disabled (note: ${paths.sudoersRunner} does not exist)`;
  } else {
    await Deno.writeFile(paths.sudoersRunner, new Uint8Array());
  }
  const listing = await tools.listRunnerPrivileges();
  const granted = listing === undefined ? [] : grantedCommands(listing);
  if (granted.length > 0) {
    warnings.push(`sudo -l -U runner still lists commands after disabling sudo: ${granted.join("; ")}`);
  }
  return { message, warnings };
}

function loggingLine(stateDir: string): string {
  return `Defaults logfile="${stateDir}/${SUDO_LOG}"`;
}

/** Writes `content` over the sudoers file (mode 0440), after visudo accepted it in a temp file. */
async function writeCheckedSudoers(paths: SystemPaths, content: string, tools: SudoTools): Promise<void> {
  const temporary = `${paths.sudoersRunner}.egress-tmp`;
  await Deno.writeTextFile(temporary, content, { mode: 0o440 });
  try {
    await Deno.chmod(temporary, 0o440);
    const complaint = await tools.checkSudoers(temporary);
    if (complaint !== undefined) {
      throw new Error(`Cannot update ${paths.sudoersRunner}: visudo: ${complaint}`);
    }
    await Deno.rename(temporary, paths.sudoersRunner);
  } finally {
    await Deno.remove(temporary).catch(() => {});
  }
}

/** allow-sudo: back up, then append the logfile directive (checked with visudo -cf). */
export async function enableSudoLogging(
  paths: SystemPaths,
  stateDir: string,
  tools: SudoTools,
): Promise<SudoResult> {
  const backup = await backUpSudoers(paths, stateDir);
  if (backup === "missing") {
    return { message: "sudo logging not enabled", warnings: [`${paths.sudoersRunner} does not exist`] };
  }
  const current = await Deno.readTextFile(paths.sudoersRunner);
  const line = loggingLine(stateDir);
  if (current.split("\n").includes(line)) return { message: "sudo logging enabled", warnings: [] };
  const content = (current === "" || current.endsWith("\n") ? current : current + "\n") + line + "\n";
  await writeCheckedSudoers(paths, content, tools);
  return { message: "sudo logging enabled", warnings: [] };
}

/** enable-sudo: restore the backup (plus the logging line when sudo use is being logged). */
export async function enableSudo(
  paths: SystemPaths,
  stateDir: string,
  tools: SudoTools,
  options: { logging: boolean },
): Promise<SudoResult> {
  if (await exists(`${stateDir}/${MISSING_MARKER}`)) {
    return { message: "sudo enabled", warnings: [`${paths.sudoersRunner} did not exist at start`] };
  }
  const backup = `${stateDir}/${SUDOERS_BACKUP}`;
  if (!(await exists(backup))) throw new Error("Cannot enable sudo: sudo was never disabled (no backup)");
  const original = await Deno.readTextFile(backup);
  if (options.logging) {
    const content = (original === "" || original.endsWith("\n") ? original : original + "\n") +
      loggingLine(stateDir) +
      "\n";
    await writeCheckedSudoers(paths, content, tools);
  } else {
    await restoreFile(backup, paths.sudoersRunner);
  }
  return { message: "sudo enabled", warnings: [] };
}

async function restoreFile(from: string, to: string): Promise<void> {
  const temporary = `${to}.egress-tmp`;
  await Deno.writeFile(temporary, await Deno.readFile(from), { mode: 0o440 });
  await Deno.chmod(temporary, 0o440);
  await Deno.rename(temporary, to);
}

/** Shutdown: the sudoers file as it was before egress started; the backup is removed. */
export async function restoreSudoers(paths: SystemPaths, stateDir: string): Promise<string> {
  const marker = `${stateDir}/${MISSING_MARKER}`;
  const backup = `${stateDir}/${SUDOERS_BACKUP}`;
  if (await exists(marker)) {
    await Deno.remove(marker);
    return "sudoers: nothing to restore (there was no runner file)";
  }
  if (!(await exists(backup))) return "sudoers: unchanged";
  await restoreFile(backup, paths.sudoersRunner);
  await Deno.remove(backup);
  return `sudoers: restored ${paths.sudoersRunner}`;
}

/** The sudo log (if any) as text, removed afterwards; undefined when nothing was logged. */
export async function takeSudoLog(stateDir: string): Promise<string | undefined> {
  const path = `${stateDir}/${SUDO_LOG}`;
  try {
    const text = await Deno.readTextFile(path);
    await Deno.remove(path);
    return text;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
