import assert from "node:assert/strict";
import { ProcReader } from "../../src/proc/process.ts";
import { makeFakeProc, writeFakeProcess } from "./fake_proc.ts";

Deno.test("ProcReader on a fake tree: every field, env limited to the keys asked", () => {
  const root = makeFakeProc([{
    pid: 300,
    ppid: 200,
    comm: "my (odd) name",
    exe: "/usr/bin/curl",
    cgroup: "/ci/job-1",
    env: { GITHUB_ACTION: "s1", TOKEN: "secret" },
    cmdline: ["curl", "-s", "https://example.com"],
    startTime: 5555,
  }]);
  try {
    const proc = new ProcReader(root);
    assert.deepEqual(proc.read(300, { envKeys: ["GITHUB_ACTION"] }), {
      pid: 300,
      ppid: 200,
      comm: "my (odd) name",
      startTime: "5555",
      exe: "/usr/bin/curl",
      cmdline: ["curl", "-s", "https://example.com"],
      cgroup: "/ci/job-1",
      env: { GITHUB_ACTION: "s1" },
    });
    assert.equal(proc.read(300)!.env, undefined, "environ is not read unless asked");
    assert.equal(proc.read(300, { envKeys: ["GITHUB_ACTION"], envOnlyInCgroup: "/other" })!.env, undefined);
    assert.equal(proc.read(301), undefined);
    assert.equal(proc.read(-1), undefined);
    assert.equal(proc.read(1.5), undefined);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("ProcReader: a start time that changes during the read means PID reuse ⇒ undefined", () => {
  const root = makeFakeProc([{ pid: 400, ppid: 1, exe: "/bin/a", startTime: 10 }]);
  try {
    // A reader whose exe read happens "while" the PID gets reused by another process.
    class ReusingReader extends ProcReader {
      override exe(pid: number) {
        const exe = super.exe(pid);
        writeFakeProcess(root, { pid: 400, ppid: 1, exe: "/bin/b", startTime: 11 });
        return exe;
      }
    }
    assert.equal(new ReusingReader(root).read(400), undefined);
    // Without reuse the same tree reads fine.
    assert.equal(new ProcReader(root).read(400)?.exe, "/bin/b");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("ProcReader on the real /proc: a live child, then the same pid after it exited", async () => {
  const child = new Deno.Command("/bin/sleep", { args: ["30"], stdout: "null", stderr: "null" }).spawn();
  const proc = new ProcReader();
  try {
    const snapshot = proc.read(child.pid, { envKeys: ["PATH"] });
    assert.ok(snapshot);
    assert.equal(snapshot.ppid, Deno.pid);
    assert.equal(snapshot.exe, Deno.realPathSync("/bin/sleep"));
    assert.deepEqual(snapshot.cmdline, ["/bin/sleep", "30"]);
    assert.equal(snapshot.cgroup, new ProcReader().read(Deno.pid)!.cgroup);
    assert.equal(snapshot.env?.PATH, Deno.env.get("PATH"));
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  assert.equal(proc.read(child.pid), undefined);
});
