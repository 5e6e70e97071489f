// cgroup v2 discovery and handling. The cgroup2 mount point differs between machines (hybrid
// hosts mount it at /sys/fs/cgroup/unified, GitHub's runners at /sys/fs/cgroup), so it is always
// read from /proc/self/mountinfo, never hard-coded.

export interface MountEntry {
  mountPoint: string;
  /** Path of the mount's root inside its filesystem (4th mountinfo field). */
  root: string;
  fsType: string;
  source: string;
}

/** Undoes mountinfo's octal escapes (\040 for space, \011, \012, \134). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses /proc/<pid>/mountinfo text (pure). Malformed lines are skipped. */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const fields = line.split(" ");
    const separator = fields.indexOf("-", 6);
    if (separator < 0 || fields.length < separator + 3) continue;
    entries.push({
      mountPoint: unescapeMountField(fields[4]),
      root: unescapeMountField(fields[3]),
      fsType: fields[separator + 1],
      source: unescapeMountField(fields[separator + 2]),
    });
  }
  return entries;
}

/** The cgroup2 mount point from mountinfo text, or undefined (pure). The last mount wins (shadowing). */
export function cgroup2MountFrom(mountInfo: string): string | undefined {
  const mounts = parseMountInfo(mountInfo).filter((entry) =>
    entry.fsType === "cgroup2" && entry.root === "/"
  );
  return mounts.at(-1)?.mountPoint;
}

/** Mount point of the cgroup v2 hierarchy of this process; throws when there is none. */
export function cgroup2Mount(): string {
  const mount = cgroup2MountFrom(Deno.readTextFileSync("/proc/self/mountinfo"));
  if (!mount) {
    throw new Error("Cannot find the cgroup v2 hierarchy: no cgroup2 mount in /proc/self/mountinfo");
  }
  return mount;
}

export interface CgroupPath {
  /** Path inside the hierarchy, e.g. "/system.slice/egress.scope" ("/" for the root). */
  hierarchyPath: string;
  /** Filesystem path, e.g. "/sys/fs/cgroup/unified/system.slice/egress.scope". */
  fsPath: string;
}

/**
 * Resolves a cgroup given either as a path inside the hierarchy ("/system.slice/x.scope", "a/b")
 * or as a full filesystem path under the cgroup2 mount (pure: the mount point is passed in).
 * Rejects "." and ".." components so a path can never leave the hierarchy.
 */
export function resolveCgroupPath(spec: string, mount: string): CgroupPath {
  if (spec.includes("\0")) throw new Error(`Cannot use cgroup ${JSON.stringify(spec)}: it contains NUL`);
  const cleanMount = mount.replace(/\/+$/, "") || "/";
  let inside = spec;
  if (spec === cleanMount) inside = "/";
  else if (cleanMount !== "/" && spec.startsWith(cleanMount + "/")) inside = spec.slice(cleanMount.length);
  const parts = inside.split("/").filter((part) => part !== "");
  if (parts.some((part) => part === "." || part === "..")) {
    throw new Error(`Cannot use cgroup ${JSON.stringify(spec)}: "." and ".." are not allowed`);
  }
  const hierarchyPath = "/" + parts.join("/");
  const fsPath = parts.length === 0
    ? cleanMount
    : `${cleanMount === "/" ? "" : cleanMount}/${parts.join("/")}`;
  return { hierarchyPath, fsPath };
}

/** resolveCgroupPath against this machine's cgroup2 mount; the cgroup must exist. */
export function resolveCgroup(spec = "/"): CgroupPath {
  const resolved = resolveCgroupPath(spec, cgroup2Mount());
  try {
    if (!Deno.statSync(resolved.fsPath).isDirectory) throw new Error("not a directory");
  } catch (error) {
    throw new Error(
      `Cannot use cgroup ${spec}: ${resolved.fsPath} is not a cgroup directory (${(error as Error).message})`,
    );
  }
  return resolved;
}

/** The cgroup v2 path ("0::<path>" line) of a process, from /proc/<pid>/cgroup text (pure). */
export function cgroupV2PathFrom(procCgroup: string): string | undefined {
  for (const line of procCgroup.split("\n")) {
    if (line.startsWith("0::")) return line.slice(3) || "/";
  }
  return undefined;
}

export function cgroupOfProcess(pid: number | "self" = "self"): string {
  const path = cgroupV2PathFrom(Deno.readTextFileSync(`/proc/${pid}/cgroup`));
  if (!path) throw new Error(`Cannot read the cgroup of process ${pid}: no cgroup v2 entry`);
  return path;
}

/** Creates a cgroup (and missing parents) and returns its paths. */
export function createCgroup(spec: string): CgroupPath {
  const resolved = resolveCgroupPath(spec, cgroup2Mount());
  Deno.mkdirSync(resolved.fsPath, { recursive: true });
  return resolved;
}

/** Moves a process (default: the caller) into a cgroup. */
export function joinCgroup(cgroup: CgroupPath, pid: number = Deno.pid): void {
  try {
    Deno.writeTextFileSync(`${cgroup.fsPath}/cgroup.procs`, `${pid}\n`);
  } catch (error) {
    throw new Error(
      `Cannot move process ${pid} into cgroup ${cgroup.hierarchyPath}: ${(error as Error).message}`,
    );
  }
}

/** Pids currently in a cgroup (not its children). */
export function cgroupPids(cgroup: CgroupPath): number[] {
  try {
    return Deno.readTextFileSync(`${cgroup.fsPath}/cgroup.procs`).split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Removes a cgroup and its children, deepest first. Processes still inside are moved to
 * `evacuateTo` (default: the parent) first, since a populated cgroup cannot be removed.
 * Missing cgroups are ignored (idempotent).
 */
export async function removeCgroup(cgroup: CgroupPath, evacuateTo?: CgroupPath): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(cgroup.fsPath)];
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.isDirectory) continue;
    await removeCgroup({
      hierarchyPath: `${cgroup.hierarchyPath.replace(/\/$/, "")}/${entry.name}`,
      fsPath: `${cgroup.fsPath}/${entry.name}`,
    }, evacuateTo);
  }
  const target = evacuateTo ?? {
    hierarchyPath: cgroup.hierarchyPath.replace(/\/[^/]+$/, "") || "/",
    fsPath: cgroup.fsPath.replace(/\/[^/]+$/, ""),
  };
  for (const pid of cgroupPids(cgroup)) {
    try {
      joinCgroup(target, pid);
    } catch {
      // The process may have exited meanwhile.
    }
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      Deno.removeSync(cgroup.fsPath);
      return;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      if (attempt === 49) {
        throw new Error(`Cannot remove cgroup ${cgroup.hierarchyPath}: ${(error as Error).message}`);
      }
      // Exiting processes leave the cgroup populated for a moment.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
