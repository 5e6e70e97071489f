// `egress start --runner` with fake kernel parts and every system path in a temporary root:
// the hardening steps happen after steering, the control socket authenticates by peer credentials,
// trusted context and token, and shutdown restores the runner exactly.
import assert from "node:assert/strict";
import { type DaemonConfig, parseStartArgs } from "../../src/daemon/config.ts";
import { runDaemon } from "../../src/daemon/daemon.ts";
import { OperationalLog } from "../../src/log/operational_log.ts";
import { trustedContext } from "../../src/proc/github_context.ts";
import { ProcReader } from "../../src/proc/process.ts";
import { systemPaths } from "../../src/runner/paths.ts";
import { findNode, WRAPPER_MARKER } from "../../src/runner/runc_wrapper.ts";
import { sendControlCommand } from "../../src/control/client.ts";
import { hasCgroup2 } from "../helpers/netns.ts";
import { commandExists, isRoot, testWhen, unmet } from "../helpers/requirements.ts";
import { FakeRunner, NOBODY } from "../runner/fake_runner.ts";
import { fakeParts, fakeSystem, recorder } from "./fake_parts.ts";

const repo = new URL("../../", import.meta.url).pathname;
const CLIENT = `${repo}tests/control/peer_client.py`;
const ACTION = "owner/egress";
const SUDOERS = "runner ALL=(ALL) NOPASSWD:ALL\n";
const BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIBdistro\n-----END CERTIFICATE-----\n";
const RUNC = "#!/bin/sh\nexit 0\n";

const unmetHere = unmet([
  [isRoot(), "needs root (setpriv, cgroups)"],
  [hasCgroup2(), "needs a cgroup2 mount"],
  [commandExists("/usr/bin/python3"), "needs /usr/bin/python3"],
  [findNode() !== undefined, "needs node on PATH"],
]);

async function makeRoot(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "egress-runner-daemon-" });
  await Deno.chmod(root, 0o755);
  const paths = systemPaths(root);
  for (
    const dir of [
      "etc/sudoers.d",
      "etc/ssl/certs",
      "usr/bin",
      "proc/sys/kernel",
      "proc/sys/user",
      "run",
      "log",
    ]
  ) {
    await Deno.mkdir(`${root}/${dir}`, { recursive: true });
  }
  await Deno.chmod(`${root}/run`, 0o755);
  await Deno.writeTextFile(paths.sudoersRunner, SUDOERS, { mode: 0o440 });
  await Deno.writeTextFile(paths.systemCaBundle, BUNDLE);
  await Deno.writeTextFile(paths.runc, RUNC, { mode: 0o755 });
  await Deno.writeTextFile(paths.usernsClone, "1\n");
  await Deno.writeTextFile(paths.maxUserNamespaces, "63413\n");
  return root;
}

function configFor(root: string, extra: string[]): DaemonConfig {
  return parseStartArgs([
    "--runner",
    "--state-dir",
    `${root}/run/egress`,
    "--log",
    `${root}/log/connections.jsonl`,
    "--control-socket",
    `${root}/run/egress.sock`,
    "--ready-file",
    `${root}/run/egress.ready`,
    ...extra,
  ]) as DaemonConfig;
}

async function read(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

testWhen(
  unmetHere,
  "runner mode: hardening after steering, authenticated sudo control, exact restore",
  async () => {
    const root = await makeRoot();
    const runner = await FakeRunner.create("rdaemon");
    const paths = systemPaths(root);
    const config = configFor(root, []);
    const rec = recorder();
    const oplog = new OperationalLog({ path: `${root}/log/egress.log`, stderr: false });
    const proc = new ProcReader();
    try {
      let ready!: () => void;
      const readyPromise = new Promise<void>((resolve) => (ready = resolve));
      const exit = runDaemon(config, "example.com\n", [], {
        parts: fakeParts(rec),
        system: fakeSystem(rec),
        signals: false,
        oplog,
        onReady: () => ready(),
        runner: {
          paths,
          sudoTools: {
            checkSudoers: () => Promise.resolve(undefined),
            listRunnerPrivileges: () => Promise.resolve(""),
          },
          selfCheck: () => ({ ok: true, workerPid: 1, ancestry: [] }),
          contextOf: (pid) => trustedContext(pid, proc, runner.constants),
          actionRepository: ACTION,
        },
      });
      await Promise.race([
        readyPromise,
        exit.then((code) => Promise.reject(new Error(`daemon exited ${code}`))),
      ]);

      // Applied: sudo off, userns blocked, CA trusted, runc wrapped, token root-only, socket open to all.
      assert.equal(await read(paths.sudoersRunner), "");
      assert.equal(await read(paths.usernsClone), "0\n");
      const bundle = (await read(paths.systemCaBundle))!;
      const ca = (await read(`${config.stateDir}/ca.pem`))!;
      assert.ok(bundle.startsWith(BUNDLE) && bundle.includes(ca.trim()));
      assert.equal((await read(paths.caShared))?.trim(), ca.trim());
      assert.equal((await read(paths.runc))?.split("\n")[1], WRAPPER_MARKER);
      assert.equal(await read(paths.runcReal), RUNC);
      const token = (await read(`${config.stateDir}/control-token`))!.trim();
      assert.equal((await Deno.stat(`${config.stateDir}/control-token`)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(config.controlSocket)).mode! & 0o777, 0o666);
      assert.equal((await Deno.stat(config.stateDir)).mode! & 0o777, 0o700);
      const steeringAt = rec.events.indexOf("steering.flush");
      assert.ok(steeringAt >= 0);
      const log = (await read(`${root}/log/egress.log`))!;
      assert.ok(
        log.indexOf("startup: flush UDP conntrack entries") < log.indexOf("startup: harden the runner"),
      );
      assert.ok(log.indexOf("startup: harden the runner") < log.indexOf("startup: open the control socket"));

      const ours = { GITHUB_ACTION: "__owner_egress", GITHUB_ACTION_REPOSITORY: ACTION };
      const asStep = async (request: string, env = ours) => {
        const out = await runner.step(["/usr/bin/python3", CLIENT, config.controlSocket, request], {
          uid: NOBODY,
          env,
        }).output();
        return new TextDecoder().decode(out.stdout);
      };
      assert.match(await asStep("status"), /^ok: \{"mode":"enforce","state":"running","rules":\d+/);
      assert.equal(await asStep(`enable-sudo ${token}`), "ok: sudo enabled\n");
      assert.equal(await read(paths.sudoersRunner), SUDOERS);
      assert.equal(await asStep("disable-sudo"), "error: unauthorized (missing control token)\n");
      assert.equal(await read(paths.sudoersRunner), SUDOERS, "refused: unchanged");
      assert.equal(
        await asStep(`disable-sudo ${token}`, {
          GITHUB_ACTION: "x",
          GITHUB_ACTION_REPOSITORY: "evil/egress",
        }),
        "error: unauthorized (action evil/egress is not owner/egress)\n",
      );
      assert.equal(await asStep(`disable-sudo ${token}`), "ok: sudo disabled\n");
      assert.equal(await read(paths.sudoersRunner), "");
      assert.equal(await asStep(`shutdown ${token}`), "ok: shutting down\n");
      assert.equal(await exit, 0);

      // Restored exactly; the CA key and token are gone.
      assert.equal(await read(paths.sudoersRunner), SUDOERS);
      assert.equal((await Deno.stat(paths.sudoersRunner)).mode! & 0o777, 0o440);
      assert.equal(await read(paths.usernsClone), "1\n");
      assert.equal(await read(paths.systemCaBundle), BUNDLE);
      assert.equal(await read(paths.caShared), undefined);
      assert.equal(await read(paths.localCaCert), undefined);
      assert.equal(await read(paths.runc), RUNC);
      assert.equal(await read(paths.runcReal), undefined);
      assert.equal(await read(`${config.stateDir}/ca-key.pem`), undefined);
      assert.equal(await read(`${config.stateDir}/control-token`), undefined);
      assert.equal(await read(`${config.stateDir}/sudoers-runner.bak`), undefined);
      assert.equal(await read(config.controlSocket), undefined);
    } finally {
      oplog.close();
      await runner.remove();
      await Deno.remove(root, { recursive: true });
    }
  },
);

testWhen(
  unmetHere,
  "runner mode: allow-sudo logs sudo use as sudo events; no wrapper with --no-container-certs",
  async () => {
    const root = await makeRoot();
    const paths = systemPaths(root);
    const config = configFor(root, ["--allow-sudo", "--no-container-certs"]);
    const oplog = new OperationalLog({ path: `${root}/log/egress.log`, stderr: false });
    try {
      let ready!: () => void;
      const readyPromise = new Promise<void>((resolve) => (ready = resolve));
      const exit = runDaemon(config, "", [], {
        parts: fakeParts(recorder()),
        system: fakeSystem(recorder()),
        signals: false,
        oplog,
        onReady: () => ready(),
        runner: {
          paths,
          sudoTools: {
            checkSudoers: () => Promise.resolve(undefined),
            listRunnerPrivileges: () => Promise.resolve(""),
          },
          selfCheck: () => ({ ok: true, workerPid: 1, ancestry: [] }),
          actionRepository: ACTION,
        },
      });
      await Promise.race([
        readyPromise,
        exit.then((code) => Promise.reject(new Error(`daemon exited ${code}`))),
      ]);
      assert.equal(
        await read(paths.sudoersRunner),
        `${SUDOERS}Defaults logfile="${config.stateDir}/sudo.log"\n`,
      );
      assert.equal(await read(paths.runc), RUNC, "no wrapper");
      // What sudo would write while the job runs:
      await Deno.writeTextFile(
        `${config.stateDir}/sudo.log`,
        "Dec  1 18:40:02 : runner : TTY=unknown ; PWD=/home/runner/work ; USER=root ;\n    COMMAND=/usr/bin/apt-get install -y jq\n",
      );
      assert.equal(
        (await sendControlCommand(config.controlSocket, "shutdown")).ok,
        true,
        "root needs no token",
      );
      assert.equal(await exit, 0);
      const lines = (await read(config.logPath))!.trim().split("\n").map((line) => JSON.parse(line));
      const year = new Date().getUTCFullYear();
      assert.deepEqual(lines, [{
        ts: `${year}-12-01T18:40:02.000Z`,
        type: "sudo",
        pwd: "/home/runner/work",
        target_user: "root",
        cmdline: ["/usr/bin/apt-get", "install", "-y", "jq"],
      }]);
      assert.equal(await read(paths.sudoersRunner), SUDOERS);
    } finally {
      oplog.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test("runner mode: a failed self-check exits 1 before touching anything", async () => {
  const root = await makeRoot();
  const paths = systemPaths(root);
  const rec = recorder();
  const oplog = new OperationalLog({ path: `${root}/log/egress.log`, stderr: false });
  try {
    const code = await runDaemon(configFor(root, []), "", [], {
      parts: fakeParts(rec),
      system: fakeSystem(rec),
      signals: false,
      oplog,
      runner: {
        paths,
        selfCheck: () => ({ ok: false, error: "Cannot run in runner mode: no Runner.Worker", ancestry: [] }),
      },
    });
    assert.equal(code, 1);
    assert.deepEqual(rec.events, []);
    assert.equal(await read(paths.sudoersRunner), SUDOERS);
    assert.match(
      (await read(`${root}/log/egress.log`))!,
      /ERROR Cannot run in runner mode: no Runner.Worker/,
    );
  } finally {
    oplog.close();
    await Deno.remove(root, { recursive: true });
  }
});
