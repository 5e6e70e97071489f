// The committed bpf/dist objects load and attach on this kernel, close() leaves nothing of ours
// behind, and failures give one clear error.
import assert from "node:assert/strict";
import { commandExists, testWhen, unmet } from "../helpers/requirements.ts";
import {
  ATTRIBUTION_PROGRAMS,
  BpfLoadError,
  DENY_PROGRAMS,
  loadEgressBpf,
} from "../../src/kernel/bpf_loader.ts";
import {
  bpfProgramIds,
  cgroupPrograms,
  kernelTestsUnmet,
  mustRun,
  RUN,
  withCgroup,
} from "./kernel_helpers.ts";

const reason = kernelTestsUnmet();

testWhen(
  reason,
  "kernel loader: committed objects load and attach; close() leaves no program, link or pin",
  async () => {
    await withCgroup("load", async (cgroup) => {
      const before = await bpfProgramIds();
      const logs: string[] = [];
      const bpf = loadEgressBpf({
        instance: `${RUN}-load`,
        cgroup: cgroup.hierarchyPath,
        log: (level, message) => logs.push(`${level} ${message}`),
      });
      let ours: number[];
      try {
        const expected = [...ATTRIBUTION_PROGRAMS, ...DENY_PROGRAMS].map((p) => p.name).sort();
        assert.deepEqual(bpf.programNames().sort(), expected);
        const attached = await cgroupPrograms(cgroup);
        const cgroupNames = [...ATTRIBUTION_PROGRAMS, ...DENY_PROGRAMS].filter((p) => p.attach === "cgroup")
          .map((p) => p.name).sort();
        assert.deepEqual(attached.map((p) => p.name).sort(), cgroupNames);
        const after = await bpfProgramIds();
        ours = [...after].filter((id) => !before.has(id));
        assert.ok(ours.length >= expected.length, `bpftool sees our ${expected.length} programs`);
        assert.ok(Deno.statSync(`/sys/fs/bpf/egress-${RUN}-load/egress_deny_sock`).isFile);
        assert.equal(bpf.readStats().tcpPublished, 0n);
      } finally {
        bpf.close();
        bpf.close(); // idempotent
      }
      assert.deepEqual(await cgroupPrograms(cgroup), []);
      const remaining = await bpfProgramIds();
      // Programs are freed asynchronously (RCU): allow a moment.
      for (let i = 0; i < 50 && ours.some((id) => remaining.has(id)); i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        for (const id of [...remaining]) remaining.delete(id);
        for (const id of await bpfProgramIds()) remaining.add(id);
      }
      assert.deepEqual(ours.filter((id) => remaining.has(id)), [], "bpftool prog show lists none of ours");
      assert.throws(() => Deno.statSync(`/sys/fs/bpf/egress-${RUN}-load`), Deno.errors.NotFound);
      assert.ok(!logs.some((line) => line.startsWith("warn")), `no warnings: ${logs.join("\n")}`);
    });
  },
);

testWhen(
  reason,
  "kernel loader: a missing object, cgroup or bad instance name gives one clear error",
  async () => {
    await withCgroup("err", async (cgroup) => {
      assert.throws(
        () =>
          loadEgressBpf({
            instance: `${RUN}-err`,
            cgroup: cgroup.hierarchyPath,
            objectDir: "/nonexistent",
            log: () => {},
          }),
        (error: Error) =>
          error instanceof BpfLoadError &&
          error.message.startsWith("Cannot load egress BPF programs: BPF object /nonexistent/"),
      );
      assert.deepEqual(await cgroupPrograms(cgroup), [], "nothing stays attached after a failed load");
    });
    assert.throws(
      () => loadEgressBpf({ instance: `${RUN}-err`, cgroup: `/${RUN}-no-such-cgroup` }),
      /Cannot use cgroup .*is not a cgroup directory/,
    );
    assert.throws(() => loadEgressBpf({ instance: "../escape" }), /invalid instance name/);
  },
);

const BAD_PROGRAM = `
typedef unsigned int __u32;
struct bpf_sock_addr;
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
__attribute__((section("cgroup/connect4"), used))
int egress_conn4(struct bpf_sock_addr *ctx)
{
	return *(volatile __u32 *)((char *)ctx + 4000); /* out of the context: the verifier refuses */
}
`;

testWhen(
  reason ?? (commandExists("/usr/bin/clang") ? undefined : "needs /usr/bin/clang"),
  "kernel loader: a verifier rejection names the program and puts the verifier log in the operational log",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: `${RUN}-bad` });
    try {
      await Deno.writeTextFile(`${dir}/bad.c`, BAD_PROGRAM);
      await mustRun([
        "clang",
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-c",
        `${dir}/bad.c`,
        "-o",
        `${dir}/egress_attr.bpf.o`,
      ]);
      await withCgroup("bad", async (cgroup) => {
        const logs: string[] = [];
        assert.throws(
          () =>
            loadEgressBpf({
              instance: `${RUN}-bad`,
              cgroup: cgroup.hierarchyPath,
              objectDir: dir,
              deny: false,
              log: (level, message) => logs.push(`${level} ${message}`),
            }),
          (error: Error) =>
            error instanceof BpfLoadError &&
            error.message.startsWith(
              "Cannot load egress BPF programs: cgroup/connect4 (program egress_conn4):",
            ),
        );
        assert.ok(
          logs.some((line) => line.includes("BEGIN PROG LOAD LOG")),
          "verifier log reached the log sink",
        );
        assert.deepEqual(await cgroupPrograms(cgroup), []);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

const DIST = new URL("../../bpf/dist/", import.meta.url).pathname;
const BUILD_SCRIPT = new URL("../../scripts/build_bpf.sh", import.meta.url).pathname;

/** Why a rebuild cannot be compared with the committed objects here, or undefined. */
async function rebuildUnmet(): Promise<string | undefined> {
  const tools = unmet(
    ["/usr/bin/clang", "/usr/bin/llvm-strip", "/usr/sbin/bpftool"].map((
      tool,
    ): [boolean, string] => [commandExists(tool), `needs ${tool}`]),
  );
  if (reason ?? tools) return reason ?? tools;
  const committed = Deno.readTextFileSync(`${DIST}kernel_btf.sha256`).trim();
  const digest = await crypto.subtle.digest("SHA-256", Deno.readFileSync("/sys/kernel/btf/vmlinux"));
  const running = [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return running === committed
    ? undefined
    : "bpf/dist was built against another kernel's BTF (bpf/dist/kernel_btf.sha256): vmlinux.h differs";
}

testWhen(
  await rebuildUnmet(),
  "kernel loader: build:bpf from the committed sources reproduces the committed objects byte for byte",
  async () => {
    const out = await Deno.makeTempDir({ prefix: `${RUN}-build` });
    try {
      const build = await new Deno.Command("bash", {
        args: [BUILD_SCRIPT],
        env: { EGRESS_BPF_OUT: out },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
      for (const name of ["egress_attr.bpf.o", "egress_deny.bpf.o", "kernel_btf.sha256"]) {
        assert.deepEqual(
          Deno.readFileSync(`${out}/${name}`),
          Deno.readFileSync(`${DIST}${name}`),
          `${name} differs from bpf/dist: run deno task build:bpf and commit bpf/dist`,
        );
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
);

/** Runs loadEgressBpf in a child whose private mount namespace first ran `hide` (a shell snippet). */
async function loadWithHidden(hide: string): Promise<{ name?: string; message?: string; loaded?: boolean }> {
  const loader = JSON.stringify(new URL("../../src/kernel/bpf_loader.ts", import.meta.url).href);
  const script = `
    import { loadEgressBpf } from ${loader};
    try {
      loadEgressBpf({ instance: "hidden", attribution: false, deny: false, log: () => {} }).close();
      console.log(JSON.stringify({ loaded: true }));
    } catch (error) {
      console.log(JSON.stringify({ name: error.name, message: error.message }));
    }`;
  const output = await new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      `${hide}; exec "$@"`,
      "sh",
      Deno.execPath(),
      "eval",
      script,
    ],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout).trim();
  try {
    return JSON.parse(text.split("\n").at(-1) ?? "");
  } catch {
    throw new Error(`loader child printed no JSON: ${text} ${new TextDecoder().decode(output.stderr)}`);
  }
}

testWhen(
  reason ?? (commandExists("/usr/bin/unshare") ? undefined : "needs /usr/bin/unshare"),
  "kernel loader: a missing libbpf or kernel BTF gives one BpfLoadError naming it",
  async () => {
    // Private mount namespaces hide things from one child only (nothing else sees the mounts).
    const noLibbpf = await loadWithHidden(
      'for lib in /usr/lib/*/libbpf.so.1 /lib/*/libbpf.so.1; do [ -e "$lib" ] && mount --bind /dev/null "$(readlink -f "$lib")"; done',
    );
    assert.equal(noLibbpf.name, "BpfLoadError", JSON.stringify(noLibbpf));
    assert.match(
      noLibbpf.message!,
      /^Cannot load egress BPF programs: libbpf\.so\.1: Cannot load libbpf\.so\.1 \(install the Debian package libbpf1\)/,
    );
    const noBtf = await loadWithHidden("mount -t tmpfs none /sys/kernel/btf");
    assert.equal(noBtf.name, "BpfLoadError", JSON.stringify(noBtf));
    assert.match(
      noBtf.message!,
      /^Cannot load egress BPF programs: kernel BTF: \/sys\/kernel\/btf\/vmlinux is missing/,
    );
    // The control: with nothing hidden the same child loads.
    assert.deepEqual(await loadWithHidden("true"), { loaded: true });
  },
);
