// User-namespace blocking (runner.md §5): unprivileged code must not build a private network
// namespace that interception does not see. Ubuntu's `kernel.unprivileged_userns_clone=0` where the
// kernel has it, else `user.max_user_namespaces=0`; the old value is kept in the state dir so a
// restarted supervisor still restores it at shutdown.

import type { SystemPaths } from "./paths.ts";

const STATE_FILE = "sysctl-userns.json";

export type SysctlChange = { path: string; previous: string };

async function readValue(path: string): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Sets the sysctl to 0 and records the previous value (kept from an earlier call if present). */
export async function blockUserNamespaces(paths: SystemPaths, stateDir: string): Promise<SysctlChange> {
  const recorded = await recordedChange(stateDir);
  for (const path of [paths.usernsClone, paths.maxUserNamespaces]) {
    const previous = await readValue(path);
    if (previous === undefined) continue;
    const change = recorded?.path === path ? recorded : { path, previous };
    await Deno.writeTextFile(`${stateDir}/${STATE_FILE}`, JSON.stringify(change), { mode: 0o600 });
    await Deno.writeTextFile(path, "0\n");
    const now = await readValue(path);
    if (now !== "0") throw new Error(`Cannot block user namespaces: ${path} is ${now} after writing 0`);
    return change;
  }
  throw new Error(
    `Cannot block user namespaces: neither ${paths.usernsClone} nor ${paths.maxUserNamespaces} exists`,
  );
}

async function recordedChange(stateDir: string): Promise<SysctlChange | undefined> {
  try {
    const value = JSON.parse(await Deno.readTextFile(`${stateDir}/${STATE_FILE}`));
    if (typeof value?.path === "string" && typeof value?.previous === "string") return value;
  } catch {
    // none recorded
  }
  return undefined;
}

/** Shutdown: writes the recorded previous value back; a no-op when nothing was changed. */
export async function restoreUserNamespaces(stateDir: string): Promise<string> {
  const change = await recordedChange(stateDir);
  if (!change) return "user namespaces: unchanged";
  await Deno.writeTextFile(change.path, `${change.previous}\n`);
  await Deno.remove(`${stateDir}/${STATE_FILE}`);
  return `user namespaces: restored ${change.path} = ${change.previous}`;
}
