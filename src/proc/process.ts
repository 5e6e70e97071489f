// Reads one process from /proc (or a fake tree with the same layout). Synchronous on purpose: the
// files are tiny and in memory, and a sync read costs far less than a round trip through the
// thread pool. A process that exits mid-read, or whose PID was reused, yields undefined; nothing
// here throws for a vanished or unreadable process.

import { parseCgroupV2, parseCmdline, parseEnviron, parseStat, type ProcStat } from "./parse.ts";

export type ProcessSnapshot = {
  pid: number;
  ppid: number;
  comm: string;
  startTime: string;
  /** readlink of `exe`; may end in " (deleted)". Undefined for kernel threads or without permission. */
  exe?: string;
  cmdline?: string[];
  cgroup?: string;
  /** Only the keys asked for, and only those present. */
  env?: Record<string, string>;
};

export type ReadOptions = {
  /** Environment keys to read; none ⇒ environ is not opened. */
  envKeys?: readonly string[];
  /** Read environ only when the process's cgroup equals this path (saves a read, keeps secrets out). */
  envOnlyInCgroup?: string;
  /** Skip cmdline (the ancestry walk does not need it). */
  skipCmdline?: boolean;
  /** Skip cgroup (the trusted-context walk needs it only for the process itself). */
  skipCgroup?: boolean;
};

export class ProcReader {
  constructor(readonly root = "/proc") {}

  #path(pid: number, file: string): string {
    return `${this.root}/${pid}/${file}`;
  }

  #readBytes(pid: number, file: string): Uint8Array | undefined {
    try {
      return Deno.readFileSync(this.#path(pid, file));
    } catch {
      return undefined;
    }
  }

  #readText(pid: number, file: string): string | undefined {
    try {
      return Deno.readTextFileSync(this.#path(pid, file));
    } catch {
      return undefined;
    }
  }

  /** Parsed `stat`, or undefined if the process is gone or the file is malformed. */
  stat(pid: number): ProcStat | undefined {
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const text = this.#readText(pid, "stat");
    return text === undefined ? undefined : parseStat(text);
  }

  exe(pid: number): string | undefined {
    try {
      return Deno.readLinkSync(this.#path(pid, "exe"));
    } catch {
      return undefined;
    }
  }

  /**
   * One consistent snapshot: `stat` is read first and last, and the start times must agree;
   * otherwise the PID was reused (or the process exited) during the read and the answer is undefined.
   */
  read(pid: number, options: ReadOptions = {}): ProcessSnapshot | undefined {
    const before = this.stat(pid);
    if (!before) return undefined;
    const snapshot: ProcessSnapshot = {
      pid,
      ppid: before.ppid,
      comm: before.comm,
      startTime: before.startTime,
    };
    const exe = this.exe(pid);
    if (exe !== undefined) snapshot.exe = exe;
    if (!options.skipCmdline) {
      const raw = this.#readBytes(pid, "cmdline");
      const cmdline = raw ? parseCmdline(raw) : undefined;
      if (cmdline) snapshot.cmdline = cmdline;
    }
    const cgroupText = options.skipCgroup ? undefined : this.#readText(pid, "cgroup");
    const cgroup = cgroupText === undefined ? undefined : parseCgroupV2(cgroupText);
    if (cgroup !== undefined) snapshot.cgroup = cgroup;
    const envAllowed = options.envOnlyInCgroup === undefined || options.envOnlyInCgroup === cgroup;
    if (options.envKeys && options.envKeys.length > 0 && envAllowed) {
      const raw = this.#readBytes(pid, "environ");
      if (raw) snapshot.env = parseEnviron(raw, options.envKeys);
    }
    const after = this.stat(pid);
    if (!after || after.startTime !== before.startTime) return undefined;
    return snapshot;
  }
}
