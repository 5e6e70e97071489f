// Builds a fake /proc tree in a temp dir for the pure-ish /proc tests (exe is a real symlink).

export type FakeProcess = {
  pid: number;
  ppid: number;
  exe?: string;
  comm?: string;
  startTime?: number;
  cgroup?: string;
  env?: Record<string, string>;
  cmdline?: string[];
};

export function statLine(pid: number, comm: string, ppid: number, startTime: number): string {
  // Fields 5..21 are irrelevant here; field 22 is the start time.
  const middle = Array.from({ length: 17 }, (_, i) => String(i + 1)).join(" ");
  return `${pid} (${comm}) S ${ppid} ${middle} ${startTime} 1000 200 18446744073709551615\n`;
}

export function makeFakeProc(processes: FakeProcess[]): string {
  const root = Deno.makeTempDirSync({ prefix: "egress-fakeproc-" });
  for (const p of processes) writeFakeProcess(root, p);
  return root;
}

export function writeFakeProcess(root: string, p: FakeProcess): void {
  const dir = `${root}/${p.pid}`;
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(
    `${dir}/stat`,
    statLine(p.pid, p.comm ?? "proc", p.ppid, p.startTime ?? 100 + p.pid),
  );
  if (p.exe !== undefined) {
    try {
      Deno.removeSync(`${dir}/exe`);
    } catch { /* absent */ }
    Deno.symlinkSync(p.exe, `${dir}/exe`);
  }
  Deno.writeTextFileSync(`${dir}/cgroup`, `12:memory:/x\n0::${p.cgroup ?? "/"}\n`);
  const env = Object.entries(p.env ?? {}).map(([k, v]) => `${k}=${v}\0`).join("");
  Deno.writeTextFileSync(`${dir}/environ`, env);
  Deno.writeTextFileSync(`${dir}/cmdline`, (p.cmdline ?? [p.exe ?? "x"]).map((a) => `${a}\0`).join(""));
}
