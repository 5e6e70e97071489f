// The daemon's startup and shutdown order, failure handling, control socket and reload, with fake
// kernel pieces (no root needed): what runs, in which order, and what is left afterwards.
import assert from "node:assert/strict";
import { runDaemon } from "../../src/daemon/daemon.ts";
import { type DaemonConfig, parseStartArgs } from "../../src/daemon/config.ts";
import { OperationalLog } from "../../src/log/operational_log.ts";
import { sendControlCommand } from "../../src/control/client.ts";
import { parseStatus } from "../../src/control/protocol.ts";
import { fakeParts, fakeSystem, type Recorder, recorder } from "./fake_parts.ts";

async function setup(extra: string[] = []) {
  const dir = await Deno.makeTempDir({ prefix: "egress-lifecycle-" });
  const config = parseStartArgs([
    "--state-dir",
    `${dir}/state`,
    "--log",
    `${dir}/log/connections.jsonl`,
    "--control-socket",
    `${dir}/egress.sock`,
    "--ready-file",
    `${dir}/ready`,
    ...extra,
  ]) as DaemonConfig;
  const oplogPath = `${dir}/op.log`;
  const oplog = new OperationalLog({ path: oplogPath, stderr: false, debug: false });
  return { dir, config, oplog, oplogPath };
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

const START_ORDER = [
  "cgroup.enter",
  "cgroup.stale",
  "steering.leftovers",
  "bpf.load",
  "dns.start",
  "proxy.start",
  "udp.start",
  "steering.install /egress-test.scope",
  "steering.flush",
];
const STOP_ORDER = [
  "udp.close",
  "proxy.close",
  "dns.close",
  "steering.remove",
  "bpf.close",
  "conntrack.close",
  "cgroup.leave",
];

async function startAndWait(rec: Recorder, env: Awaited<ReturnType<typeof setup>>, policy: string) {
  let stop: () => void = () => {};
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const exit = runDaemon(env.config, policy, [], {
    parts: fakeParts(rec),
    system: fakeSystem(rec),
    signals: false,
    oplog: env.oplog,
    onReady: (s) => {
      stop = s;
      readyResolve();
    },
  });
  await Promise.race([ready, exit]);
  return { exit, stop: () => stop() };
}

Deno.test("daemon: starts in order, answers status/reload/shutdown, then cleans up in order", async () => {
  const env = await setup();
  try {
    const policyPath = `${env.dir}/policy.txt`;
    await Deno.writeTextFile(policyPath, "example.com\n");
    env.config.policyPath = policyPath;
    const rec = recorder();
    const { exit } = await startAndWait(rec, env, "example.com\n");
    assert.deepEqual(rec.events, START_ORDER);
    assert.ok(exists(env.config.readyFile!), "ready file exists once running");
    assert.equal(Deno.statSync(env.config.controlSocket).mode! & 0o777, 0o600);

    const status = await sendControlCommand(env.config.controlSocket, "status");
    assert.equal(status.ok, true);
    const body = parseStatus(status.text);
    assert.equal(body.mode, "enforce");
    assert.equal(body.state, "running");
    assert.equal(body.rules, 1);
    assert.deepEqual(body.counters, { allowed: 3, denied: 6, dns: 3, errors: 0 });

    rec.unhealthy.add("udp");
    assert.equal(
      parseStatus((await sendControlCommand(env.config.controlSocket, "status")).text).state,
      "degraded",
    );
    rec.unhealthy.clear();

    const unknown = await sendControlCommand(env.config.controlSocket, "launch");
    assert.deepEqual(unknown, { ok: false, text: "unknown command" });

    await Deno.writeTextFile(policyPath, "example.com\nbad..host\n");
    const refused = await sendControlCommand(env.config.controlSocket, "reload");
    assert.equal(refused.ok, false);
    assert.match(refused.text, /^policy not reloaded: 2:/);
    assert.equal(parseStatus((await sendControlCommand(env.config.controlSocket, "status")).text).rules, 1);

    await Deno.writeTextFile(policyPath, "example.com\nexample.org\n*.example.net\n");
    const reloaded = await sendControlCommand(env.config.controlSocket, "reload");
    assert.deepEqual(reloaded, { ok: true, text: "reloaded 3 rules" });
    assert.ok(rec.events.includes("steering.revoke"), "reload revokes the UDP fast path");
    const enforcer = rec.contexts[0].policy.enforcer;
    assert.equal(
      enforcer.decide({ type: "https", dst_ip: "192.0.2.1", dst_port: 443, host: "example.org" }).allowed,
      true,
    );

    rec.events.length = 0;
    const bye = await sendControlCommand(env.config.controlSocket, "shutdown");
    assert.deepEqual(bye, { ok: true, text: "shutting down" });
    assert.equal(await exit, 0);
    assert.deepEqual(rec.events, STOP_ORDER);
    assert.ok(!exists(env.config.controlSocket), "socket removed");
    assert.ok(!exists(env.config.readyFile!), "ready file removed");
    assert.ok(!exists(`${env.config.stateDir}/ca-key.pem`), "CA key deleted at shutdown");
    const oplog = await Deno.readTextFile(env.oplogPath);
    assert.match(oplog, /INFO startup: install packet steering: done in [\d.]+ ms/);
    assert.match(oplog, /INFO shutdown: remove packet steering: done in/);
    assert.match(oplog, /INFO control socket: "status"/);
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("daemon: a failing startup step removes what was set up and exits 1", async () => {
  const env = await setup();
  try {
    const rec = recorder(["steering.install /egress-test.scope"]);
    const { exit } = await startAndWait(rec, env, "");
    assert.equal(await exit, 1);
    assert.deepEqual(rec.events, [...START_ORDER.slice(0, 8), ...STOP_ORDER]);
    assert.ok(!exists(env.config.readyFile!), "no ready file");
    assert.ok(!exists(env.config.controlSocket), "no socket");
    assert.match(
      await Deno.readTextFile(env.oplogPath),
      /ERROR startup failed: Cannot install packet steering: .*injected/,
    );
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("daemon: a failing cleanup step does not skip the next ones; exit 1", async () => {
  const env = await setup();
  try {
    const rec = recorder(["dns.close", "steering.remove"]);
    const { exit, stop } = await startAndWait(rec, env, "");
    rec.events.length = 0;
    stop();
    assert.equal(await exit, 1);
    assert.deepEqual(rec.events, STOP_ORDER);
    const oplog = await Deno.readTextFile(env.oplogPath);
    assert.match(oplog, /ERROR shutdown: Cannot remove packet steering: steering.remove failed/);
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("daemon: an enforce-mode policy error refuses before touching anything", async () => {
  const env = await setup();
  try {
    const rec = recorder();
    const { exit } = await startAndWait(rec, env, "example.com\nnot a rule!!\n");
    assert.equal(await exit, 1);
    assert.deepEqual(rec.events, []);
    assert.ok(!exists(env.config.stateDir), "state dir not created");
    assert.match(await Deno.readTextFile(env.oplogPath), /ERROR policy: 2:\d+: /);
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("daemon: audit mode skips bad policy lines and reports them", async () => {
  const env = await setup(["--audit"]);
  try {
    const rec = recorder();
    const { exit, stop } = await startAndWait(rec, env, "example.com\nnot a rule!!\nexample.org\n");
    const status = parseStatus((await sendControlCommand(env.config.controlSocket, "status")).text);
    assert.equal(status.mode, "audit");
    assert.equal(status.rules, 2);
    stop();
    assert.equal(await exit, 0);
    assert.match(
      await Deno.readTextFile(env.oplogPath),
      /WARN policy: 2:\d+: .*\(line skipped, audit mode\)/,
    );
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("daemon: refuses to start while another daemon answers on the socket", async () => {
  const env = await setup();
  try {
    const first = recorder();
    const running = await startAndWait(first, env, "");
    const second = recorder();
    const other = await setup();
    other.config.controlSocket = env.config.controlSocket;
    const exit = await runDaemon(other.config, "", [], {
      parts: fakeParts(second),
      system: fakeSystem(second),
      signals: false,
      oplog: other.oplog,
    });
    assert.equal(exit, 1);
    assert.deepEqual(second.events, []);
    assert.match(await Deno.readTextFile(other.oplogPath), /another egress daemon answers/);
    other.oplog.close();
    await Deno.remove(other.dir, { recursive: true });
    running.stop();
    assert.equal(await running.exit, 0);
  } finally {
    env.oplog.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});
