import assert from "node:assert/strict";
import { findBtfTypeId } from "../../src/cli/doctor.ts";
import { probeBpfProgramLoad } from "../../ffi/libc.ts";
import { commandExists, needsRoot, testWhen } from "../helpers/requirements.ts";

const doctor = new URL("../../src/cli/doctor.ts", import.meta.url).pathname;
const IDS = [
  "btf",
  "cgroup2",
  "cgroup_bpf",
  "sockops",
  "tp_btf",
  "libbpf",
  "libnetfilter_queue",
  "xt_nfqueue",
  "conntrack",
  "iptables",
  "nft",
  "deno",
];

async function runDoctorProcess(args: string[], prefix: string[] = []) {
  const argv = [...prefix, Deno.execPath(), "run", "-A", doctor, ...args];
  const output = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

type Report = {
  ok: boolean;
  root: boolean;
  checks: Array<
    { id: string; name: string; status: string; required: boolean; detail: string; install: string }
  >;
};

Deno.test("doctor --json: every item, statuses from the allowed set, exit code follows the required items", async () => {
  const { code, stdout } = await runDoctorProcess(["--json"]);
  const report = JSON.parse(stdout) as Report;
  assert.deepEqual(report.checks.map((c) => c.id), IDS);
  for (const check of report.checks) {
    assert.ok(["yes", "no", "unknown"].includes(check.status), check.id);
    assert.ok(check.detail.length > 0 && check.install.length > 0, check.id);
  }
  const allRequired = report.checks.every((c) => !c.required || c.status === "yes");
  assert.equal(report.ok, allRequired);
  assert.equal(code, allRequired ? 0 : 1);
  assert.equal(report.root, Deno.uid() === 0);
  // Facts this test can verify independently.
  const byId = new Map(report.checks.map((c) => [c.id, c]));
  const btfPresent = (() => {
    try {
      return Deno.statSync("/sys/kernel/btf/vmlinux").isFile;
    } catch {
      return false;
    }
  })();
  assert.equal(byId.get("btf")!.status === "yes", btfPresent);
  assert.equal(byId.get("deno")!.detail.startsWith(`Deno ${Deno.version.deno}`), true);
  const mountinfo = Deno.readTextFileSync("/proc/self/mountinfo");
  assert.equal(byId.get("cgroup2")!.status === "yes", / - cgroup2 /.test(mountinfo));
  assert.equal(
    byId.get("iptables")!.status === "yes",
    commandExists("/usr/sbin/iptables") || commandExists("/sbin/iptables"),
  );
});

Deno.test("doctor text output: one line per item, a verdict line; usage errors exit 2", async () => {
  const { code, stdout } = await runDoctorProcess([]);
  const lines = stdout.trim().split("\n");
  assert.match(lines[0], /^egress doctor/);
  for (
    const name of [
      "BTF",
      "cgroup v2",
      "cgroup BPF hooks",
      "sockops",
      "BTF tracepoints",
      "libbpf.so.1",
      "libnetfilter_queue.so.1",
      "xt_NFQUEUE",
      "conntrack",
      "iptables",
      "nft",
      "Deno",
    ]
  ) {
    assert.ok(
      lines.some((l) => /^ {2}(yes|no|unknown) /.test(l) && l.includes(name)),
      `missing line for ${name}`,
    );
  }
  assert.match(lines.at(-1)!, code === 0 ? /^all required items present$/ : /^not ready: /);
  const bad = await runDoctorProcess(["--bogus"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown argument --bogus/);
});

testWhen(
  needsRoot() ?? (commandExists("/usr/bin/setpriv") ? undefined : "needs setpriv (util-linux)"),
  "doctor without root: kernel probes are unknown, never a guessed yes",
  async () => {
    const { code, stdout } = await runDoctorProcess(["--json"], [
      "/usr/bin/setpriv",
      "--reuid",
      "65534",
      "--regid",
      "65534",
      "--clear-groups",
    ]);
    const report = JSON.parse(stdout) as Report;
    assert.equal(report.root, false);
    for (const id of ["cgroup_bpf", "sockops", "tp_btf", "conntrack"]) {
      assert.equal(report.checks.find((c) => c.id === id)!.status, "unknown", id);
    }
    assert.equal(code, 1);
  },
);

// A tiny raw BTF blob: INT "int" (id 1), TYPEDEF "btf_trace_x" (id 2), STRUCT with 2 members (id 3),
// TYPEDEF "btf_trace_y" (id 4). Exercises the per-kind skipping.
function syntheticBtf(): Uint8Array {
  const strings = "\0int\0btf_trace_x\0s\0a\0b\0btf_trace_y\0";
  const off = (name: string) => strings.indexOf(`\0${name}\0`) + 1;
  const types: number[] = [];
  const type = (name: number, kind: number, vlen: number, sizeOrType: number) =>
    types.push(name, (kind << 24) | vlen, sizeOrType);
  type(off("int"), 1, 0, 4);
  types.push(0x01000020); // INT encoding word
  type(off("btf_trace_x"), 8, 0, 1);
  type(off("s"), 4, 2, 8);
  types.push(off("a"), 1, 0, off("b"), 1, 32);
  type(off("btf_trace_y"), 8, 0, 3);
  const typeBytes = new Uint8Array(types.length * 4);
  const tv = new DataView(typeBytes.buffer);
  types.forEach((v, i) => tv.setUint32(i * 4, v >>> 0, true));
  const stringBytes = new TextEncoder().encode(strings);
  const out = new Uint8Array(24 + typeBytes.length + stringBytes.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, 0xeb9f, true);
  out[2] = 1;
  v.setUint32(4, 24, true);
  v.setUint32(8, 0, true);
  v.setUint32(12, typeBytes.length, true);
  v.setUint32(16, typeBytes.length, true);
  v.setUint32(20, stringBytes.length, true);
  out.set(typeBytes, 24);
  out.set(stringBytes, 24 + typeBytes.length);
  return out;
}

Deno.test("findBtfTypeId: ids by name and kind, skipping variable-length records", () => {
  const btf = syntheticBtf();
  assert.equal(findBtfTypeId(btf, "btf_trace_x", 8), 2);
  assert.equal(findBtfTypeId(btf, "btf_trace_y", 8), 4);
  assert.equal(findBtfTypeId(btf, "int", 8), undefined, "wrong kind");
  assert.equal(findBtfTypeId(btf, "btf_trace", 8), undefined, "prefix only");
  assert.equal(findBtfTypeId(btf.subarray(0, 10), "int", 1), undefined);
  const badMagic = btf.slice();
  badMagic[0] = 0;
  assert.equal(findBtfTypeId(badMagic, "int", 1), undefined);
});

testWhen(
  needsRoot(),
  "bpf load probe reports the kernel's real answer (accepts valid, refuses invalid)",
  () => {
    const program = (ret: number) => {
      const insns = new Uint8Array(16);
      insns[0] = 0xb7;
      new DataView(insns.buffer).setInt32(4, ret, true);
      insns[8] = 0x95;
      return insns;
    };
    // cgroup_sock_addr / connect4 returning 1: valid.
    assert.equal(probeBpfProgramLoad({ progType: 18, expectedAttachType: 10, insns: program(1) }), 0);
    // Returning 7 from connect4 is outside the allowed range: the verifier must refuse it.
    assert.notEqual(probeBpfProgramLoad({ progType: 18, expectedAttachType: 10, insns: program(7) }), 0);
    // tp_btf without a BTF target id cannot load.
    assert.notEqual(probeBpfProgramLoad({ progType: 26, expectedAttachType: 23, insns: program(0) }), 0);
  },
);
