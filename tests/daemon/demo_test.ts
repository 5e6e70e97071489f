// `deno task start` = `egress demo`: finishes in bounded time, shows allowed and denied
// connections, and leaves no namespace, cgroup, steering chain, BPF pin or program behind.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import { netnsTestsUnmet, run } from "../helpers/netns.ts";
import { cgroup2Mount } from "../../src/kernel/cgroup.ts";
import { loadRealParts } from "../../src/daemon/parts.ts";

const reason = netnsTestsUnmet(["/usr/bin/dig"]) ??
  await loadRealParts().then(() => undefined, (error: Error) => error.message);
const MOD = new URL("../../mod.ts", import.meta.url).pathname;

function bpffsEntries(): Set<string> {
  try {
    return new Set([...Deno.readDirSync("/sys/fs/bpf")].map((entry) => entry.name));
  } catch {
    return new Set();
  }
}

testWhen(reason, "demo: runs egress in a sandbox, reports, and removes everything within 30 s", async () => {
  const pinsBefore = bpffsEntries();
  const started = performance.now();
  const out = await run([Deno.execPath(), "run", "-A", MOD, "demo"], {
    env: { DENO_NO_UPDATE_CHECK: "1", PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    timeoutMs: 60_000,
  });
  const seconds = (performance.now() - started) / 1000;
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.ok(seconds < 30, `took ${seconds} s`);
  const prefix = /sandbox (egdemo[0-9a-z]+)-run/.exec(out.stdout)?.[1];
  assert.ok(prefix, out.stdout);
  assert.match(out.stdout, /▸ GET https:\/\/api\.demo\.test\/\n {4}→ HTTP 200/);
  assert.match(out.stdout, /▸ POST https:\/\/files\.demo\.test\/public\/upload\n {4}→ HTTP 403/);
  assert.match(out.stdout, /▸ DNS exfiltration.*\n {4}→ REFUSED/);
  assert.match(out.stdout, /▸ raw TCP to [\d.]+:7000\n {4}→ echoed 'ping'/);
  assert.match(out.stdout, /▸ UDP to [\d.]+:9000\n {4}→ no answer \(dropped\)/);
  const summary = /summary: (\d+) connections judged: (\d+) allowed, (\d+) denied/.exec(out.stdout);
  assert.ok(summary && Number(summary[2]) > 0 && Number(summary[3]) > 0, out.stdout);
  // live lines come from the connection log, on stderr
  assert.match(
    out.stderr,
    /egress: allow https GET https:\/\/api\.demo\.test\/ {2}← curl \[\d+\] {2}rule "api\.demo\.test"/,
  );
  assert.match(out.stderr, /egress: deny {2}dns {3}c2vjcmv0\.evil\.demo\.test/);

  const netns = await run(["ip", "netns", "list"]);
  assert.ok(!netns.stdout.includes(prefix), netns.stdout);
  const cgroups = [...Deno.readDirSync(cgroup2Mount())].map((entry) => entry.name);
  assert.ok(!cgroups.some((name) => name.startsWith(prefix)), cgroups.join(" "));
  const newPins = [...bpffsEntries()].filter((name) => !pinsBefore.has(name));
  assert.deepEqual(newPins, []);
  const links = await run(["ip", "link", "show"]);
  assert.ok(!links.stdout.includes(prefix), "no veth left in the root namespace");
  const save = await run(["iptables-save"]);
  assert.ok(!/:EGRESS-/.test(save.stdout), "no steering chain in the root namespace");
});

testWhen(reason, "demo: Ctrl-C in the middle still removes the whole sandbox", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, "demo"],
    env: { DENO_NO_UPDATE_CHECK: "1", PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  const reader = child.stdout.getReader();
  const deadline = Date.now() + 30_000;
  while (!stdout.includes("egress is intercepting") && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += new TextDecoder().decode(value);
  }
  child.kill("SIGINT");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += new TextDecoder().decode(value);
  }
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  const status = await child.status;
  assert.equal(status.code, 130, stdout + stderr);
  const prefix = /sandbox (egdemo[0-9a-z]+)-run/.exec(stdout)?.[1];
  assert.ok(prefix, stdout);
  assert.match(stdout, /sandbox removed/);
  const netns = await run(["ip", "netns", "list"]);
  assert.ok(!netns.stdout.includes(prefix), netns.stdout);
  assert.ok(![...Deno.readDirSync(cgroup2Mount())].some((entry) => entry.name.startsWith(prefix)));
});
