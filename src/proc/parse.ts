// Pure parsers for /proc/<pid> files and cgroup paths. No Deno API, no node: module.

export type ProcStat = {
  pid: number;
  /** Command name as the kernel stores it (may contain spaces and parentheses). */
  comm: string;
  state: string;
  ppid: number;
  /** Field 22, clock ticks since boot, kept as text: it is only ever compared for equality. */
  startTime: string;
};

/**
 * Parses /proc/<pid>/stat. `comm` sits in parentheses and may itself contain `)` and spaces, so
 * the fields are split after the LAST `)`. Undefined for anything malformed.
 */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 1 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const rest = text.slice(close + 1).trim().split(" ");
  // rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[19] field 22 (starttime).
  if (rest.length < 20) return undefined;
  const ppid = Number(rest[1]);
  const startTime = rest[19];
  if (!Number.isInteger(ppid) || ppid < 0 || !/^\d+$/.test(startTime)) return undefined;
  return { pid, comm: text.slice(open + 1, close), state: rest[0], ppid, startTime };
}

const lenientUtf8 = new TextDecoder("utf-8", { fatal: false });

/** Splits NUL-separated bytes, dropping trailing NULs; invalid UTF-8 becomes U+FFFD. */
export function splitNul(bytes: Uint8Array): string[] {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  if (end === 0) return [];
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i <= end; i++) {
    if (i === end || bytes[i] === 0) {
      out.push(lenientUtf8.decode(bytes.subarray(start, i)));
      start = i + 1;
    }
  }
  return out;
}

/** /proc/<pid>/cmdline as argv; empty (kernel threads, zombies) ⇒ undefined. */
export function parseCmdline(bytes: Uint8Array): string[] | undefined {
  const argv = splitNul(bytes);
  return argv.length > 0 ? argv : undefined;
}

/** The cgroup v2 path from /proc/<pid>/cgroup (the `0::<path>` line); undefined when absent. */
export function parseCgroupV2(text: string): string | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("0::")) {
      const path = line.slice(3).trim();
      return path === "" ? undefined : path;
    }
  }
  return undefined;
}

/** Values of `keys` in /proc/<pid>/environ (first occurrence wins, like getenv). Others are never kept. */
export function parseEnviron(bytes: Uint8Array, keys: readonly string[]): Record<string, string> {
  const wanted = new Set(keys);
  const out: Record<string, string> = {};
  if (wanted.size === 0) return out;
  for (const entry of splitNul(bytes)) {
    const equals = entry.indexOf("=");
    if (equals <= 0) continue;
    const key = entry.slice(0, equals);
    if (wanted.has(key) && !(key in out)) out[key] = entry.slice(equals + 1);
  }
  return out;
}

const DOCKER_SCOPE = /(?:^|\/)docker-([0-9a-f]{64})\.scope$/;
const DOCKER_CGROUPFS = /(?:^|\/)docker\/([0-9a-f]{64})$/;

/** Container id for a cgroup of a Docker container (systemd `docker-<id>.scope` or cgroupfs `/docker/<id>`). */
export function containerIdFromCgroup(cgroup: string | undefined): string | undefined {
  if (!cgroup) return undefined;
  return DOCKER_SCOPE.exec(cgroup)?.[1] ?? DOCKER_CGROUPFS.exec(cgroup)?.[1];
}
