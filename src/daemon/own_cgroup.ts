// egress's own cgroup outside --runner: `<cgroup2 mount>/egress-<pid>.scope`. Steering exempts
// it by path, so parallel daemons (one per network namespace) never collide. At exit the daemon
// moves back to where it came from and removes the cgroup.

import {
  cgroupOfProcess,
  type CgroupPath,
  cgroupPids,
  createCgroup,
  joinCgroup,
  resolveCgroupPath,
} from "../kernel/cgroup.ts";

export type OwnCgroup = { cgroup: CgroupPath; previous: CgroupPath };

export function enterOwnCgroup(mount: string, pid = Deno.pid): OwnCgroup {
  const previous = resolveCgroupPath(cgroupOfProcess("self"), mount);
  const cgroup = createCgroup(`/egress-${pid}.scope`);
  try {
    joinCgroup(cgroup);
  } catch (error) {
    try {
      Deno.removeSync(cgroup.fsPath);
    } catch {
      // best effort
    }
    throw error;
  }
  return { cgroup, previous };
}

export async function leaveOwnCgroup(own: OwnCgroup, mount: string): Promise<void> {
  try {
    joinCgroup(own.previous);
  } catch {
    // The previous cgroup may be gone or not accept processes: the root always does.
    joinCgroup(resolveCgroupPath("/", mount));
  }
  for (let attempt = 0;; attempt++) {
    try {
      Deno.removeSync(own.cgroup.fsPath);
      return;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      // Children we spawned may still be exiting.
      if (attempt >= 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Removes empty `egress-<pid>.scope` cgroups whose daemon is gone (a killed run); returns their names. */
export function removeStaleOwnCgroups(mount: string): string[] {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(mount)];
  } catch {
    return removed;
  }
  for (const entry of entries) {
    const match = /^egress-(\d+)\.scope$/.exec(entry.name);
    if (!entry.isDirectory || !match || Number(match[1]) === Deno.pid || alive(Number(match[1]))) continue;
    const cgroup = resolveCgroupPath(`/${entry.name}`, mount);
    if (cgroupPids(cgroup).length > 0) continue;
    try {
      Deno.removeSync(cgroup.fsPath);
      removed.push(cgroup.hierarchyPath);
    } catch {
      // populated by a child cgroup or raced: leave it
    }
  }
  return removed;
}
