import assert from "node:assert/strict";
import {
  containerIdFromCgroup,
  parseCgroupV2,
  parseCmdline,
  parseEnviron,
  parseStat,
  splitNul,
} from "../../src/proc/parse.ts";
import { statLine } from "./fake_proc.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("parseStat: comm with spaces and parentheses; ppid and start time", () => {
  const stat = parseStat(statLine(4242, "a) (b c) )", 17, 987654321));
  assert.deepEqual(stat, { pid: 4242, comm: "a) (b c) )", state: "S", ppid: 17, startTime: "987654321" });
  const real = parseStat(Deno.readTextFileSync("/proc/self/stat"));
  assert.ok(real && real.pid > 1 && real.ppid >= 1 && /^\d+$/.test(real.startTime));
});

Deno.test("parseStat: malformed lines are rejected", () => {
  for (
    const text of [
      "",
      "12 comm S 1",
      "x (a) S 1 2",
      "12 (a) S",
      "12 (a" + " 1".repeat(30),
      "0 (a) S 1" + " 1".repeat(30),
    ]
  ) {
    assert.equal(parseStat(text), undefined, JSON.stringify(text));
  }
  assert.equal(parseStat(statLine(5, "x", 1, 10).replace(" 10 1000", " -3 1000")), undefined);
});

Deno.test("cmdline: split on NUL, trailing NULs dropped, inner empty args kept, bad UTF-8 replaced", () => {
  assert.deepEqual(parseCmdline(bytes("/bin/sh\0-c\0\0echo hi\0\0\0")), ["/bin/sh", "-c", "", "echo hi"]);
  assert.deepEqual(parseCmdline(bytes("nginx: worker process")), ["nginx: worker process"]);
  assert.equal(parseCmdline(new Uint8Array()), undefined);
  assert.equal(parseCmdline(bytes("\0\0")), undefined);
  assert.deepEqual(parseCmdline(new Uint8Array([0x61, 0xff, 0x62, 0, 0xc3, 0xa9, 0])), ["a\ufffdb", "é"]);
  assert.deepEqual(splitNul(bytes("\0a")), ["", "a"]);
});

Deno.test("parseCgroupV2: the 0:: line, hybrid and pure v2 files", () => {
  assert.equal(parseCgroupV2("0::/system.slice/docker-abc.scope\n"), "/system.slice/docker-abc.scope");
  assert.equal(parseCgroupV2("12:memory:/x\n1:name=systemd:/y\n0::/ci/job 1\n"), "/ci/job 1");
  assert.equal(parseCgroupV2("12:memory:/x\n"), undefined);
  assert.equal(parseCgroupV2("10::/not-v2\n"), undefined);
});

Deno.test("parseEnviron: only the keys asked for, first wins, values may hold '='", () => {
  const env = bytes("SECRET=x\0GITHUB_ACTION=run1\0A=b=c\0GITHUB_ACTION=late\0NOEQUALS\0=v\0");
  assert.deepEqual(parseEnviron(env, ["GITHUB_ACTION", "A", "MISSING"]), { GITHUB_ACTION: "run1", A: "b=c" });
  assert.deepEqual(parseEnviron(env, []), {});
});

Deno.test("containerIdFromCgroup: systemd scope and cgroupfs forms only", () => {
  const id = "0123456789abcdef".repeat(4);
  assert.equal(containerIdFromCgroup(`/system.slice/docker-${id}.scope`), id);
  assert.equal(containerIdFromCgroup(`/docker/${id}`), id);
  assert.equal(containerIdFromCgroup(`/kubepods/docker/${id}`), id);
  assert.equal(containerIdFromCgroup(`/system.slice/docker-${id.toUpperCase()}.scope`), undefined);
  assert.equal(containerIdFromCgroup(`/system.slice/docker-${id}0.scope`), undefined);
  assert.equal(containerIdFromCgroup(`/system.slice/docker-${id}.scope/inner`), undefined);
  assert.equal(containerIdFromCgroup(`/system.slice/notdocker-${id}.scope`), undefined);
  assert.equal(containerIdFromCgroup(`/docker/${id.slice(1)}`), undefined);
  assert.equal(containerIdFromCgroup(undefined), undefined);
});
