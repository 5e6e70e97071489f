// The bundled action end to end, without GitHub: pre and post run with Node as steps of a simulated
// runner (a fake Runner.Worker in a test cgroup, inside a test network namespace), every system
// path under a temporary root. pre starts the real daemon (`egress start --runner`), a curl step is
// denied, the sub-actions toggle sudo, post shuts the daemon down, writes the summary and uploads
// the log to a fake artifact service.
import assert from "node:assert/strict";
import { sendControlCommand } from "../../src/control/client.ts";
import { findNode, WRAPPER_MARKER } from "../../src/runner/runc_wrapper.ts";
import { codeCell } from "../../src/runner/summary.ts";
import { createTopology, netnsTestsUnmet, run } from "../helpers/netns.ts";
import { testWhen } from "../helpers/requirements.ts";
import { FakeRunner, NOBODY } from "../runner/fake_runner.ts";
import { fakeRuntimeToken, startFakeResults, unzip } from "./fake_results.ts";
import {
  ACTION,
  BUNDLE,
  copyCheckout,
  createSimulatedRunner,
  output,
  parseFileCommands,
  RUNC,
  SUDOERS,
} from "./sim_runner.ts";

const repo = new URL("../../", import.meta.url).pathname;
const NODE = findNode("/usr/local/bin:/usr/bin:/bin");

/** curl that prints only the HTTP status (000 when the connection fails). */
function statusCurl(url: string, seconds: number): string[] {
  return ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", String(seconds), url];
}

async function read(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

testWhen(
  netnsTestsUnmet(["/usr/bin/curl"]) ?? (NODE ? undefined : "needs node"),
  "action: bundled pre/post on a simulated runner start, enforce, report and restore",
  async () => {
    const topology = await createTopology("act");
    const runner = await FakeRunner.create("act");
    const results = startFakeResults();
    let sim: Awaited<ReturnType<typeof createSimulatedRunner>> | undefined;
    let daemonRunning = false;
    try {
      sim = await createSimulatedRunner(runner, NODE!, { warm: true });
      const { root, paths, files, env } = sim;
      // pre: a step of the simulated runner, inside the runner namespace.
      const started = performance.now();
      const pre = await output(
        runner.step([NODE!, `${repo}action/dist/pre.cjs`], { env, netns: topology.runner.path }),
      );
      const preMs = performance.now() - started;
      assert.equal(pre.code, 0, `pre failed:\n${pre.stdout}\n${pre.stderr}`);
      daemonRunning = true;
      assert.match(pre.stdout, /egress: Deno \d+\.\d+\.\d+ from the cache/);
      assert.match(pre.stdout, /egress: enforcing in \d+ ms/);
      console.log(`pre took ${preMs.toFixed(0)} ms (warm cache)`);

      const exported = parseFileCommands(await Deno.readTextFile(files.env));
      assert.deepEqual(exported, {
        NODE_EXTRA_CA_CERTS: paths.caShared,
        SSL_CERT_FILE: paths.systemCaBundle,
        REQUESTS_CA_BUNDLE: paths.systemCaBundle,
        AWS_CA_BUNDLE: paths.systemCaBundle,
        HEX_CACERTS_PATH: paths.systemCaBundle,
      });
      const state = parseFileCommands(await Deno.readTextFile(files.state));
      assert.match(state.control_token, /^[0-9a-f]{48}$/);
      assert.ok(pre.stdout.includes(`::add-mask::${state.control_token}`), "the token is masked");
      const status = await sendControlCommand(`${root}/run/egress.sock`, "status");
      assert.equal(status.ok, true, status.text);
      assert.match(status.text, /"mode":"enforce","state":"running"/);
      assert.equal(await read(paths.sudoersRunner), "", "sudo disabled");
      assert.equal(await read(paths.usernsClone), "0\n");
      assert.ok((await read(paths.systemCaBundle))!.startsWith(BUNDLE + "-----BEGIN CERTIFICATE-----"));
      assert.equal((await read(paths.runc))?.split("\n")[1], WRAPPER_MARKER);

      // main: gets pre's state, offers the token as the output the sub-actions take as input.
      const stateEnv = Object.fromEntries(Object.entries(state).map(([k, v]) => [`STATE_${k}`, v]));
      const main = await output(
        runner.step([NODE!, `${repo}action/dist/main.cjs`], { env: { ...env, ...stateEnv } }),
      );
      assert.deepEqual(parseFileCommands(await Deno.readTextFile(files.output)), {
        "control-token": state.control_token,
      });
      assert.match(
        main.stdout,
        new RegExp(
          `^egress: enforce, \\d+ rules \\(\\d+ built-in\\), log ${root}/var/log/egress/connections.jsonl\\n$`,
        ),
      );

      // A step whose connection the policy denies.
      const curl = await output(runner.step(
        statusCurl(`http://${topology.internetIp}:8080/blocked?token=secret`, 10),
        { env: { GITHUB_ACTION: "__run_2" }, netns: topology.runner.path, uid: NOBODY },
      ));
      assert.equal(curl.stdout, "403", curl.stderr);

      // The sub-actions, run by the runner user (here: nobody) as steps of our action repository,
      // with the token from main's output. The token is in no file the runner user can read, so a
      // step that forges egress's action context (exec env GITHUB_ACTION_REPOSITORY=…) lacks it.
      const workDir = `${root}/tmp/egress`;
      for await (const entry of Deno.readDir(workDir)) assert.notEqual(entry.name, "control-token");
      const subEnv = {
        RUNNER_TEMP: `${root}/tmp`,
        EGRESS_TEST_ROOT: root,
        GITHUB_ACTION: "__owner_egress_1",
        GITHUB_ACTION_REPOSITORY: ACTION,
        INPUT_TOKEN: state.control_token,
      };
      for (
        const [token, reason] of [["", "input token is empty"], ["f".repeat(48), "wrong control token"]]
      ) {
        const forged = await output(
          runner.step([NODE!, `${repo}enable-sudo/dist/index.cjs`], {
            env: { ...subEnv, INPUT_TOKEN: token },
            uid: NOBODY,
          }),
        );
        assert.equal(forged.code, 1);
        assert.ok(forged.stdout.startsWith("::error::") && forged.stdout.includes(reason), forged.stdout);
        assert.equal(await read(paths.sudoersRunner), "", "sudo stays disabled");
      }
      const enable = await output(
        runner.step([NODE!, `${repo}enable-sudo/dist/index.cjs`], { env: subEnv, uid: NOBODY }),
      );
      assert.equal(enable.stdout, "✓ sudo enabled\n", enable.stderr);
      assert.equal(await read(paths.sudoersRunner), SUDOERS);
      const forged = await output(runner.step([NODE!, `${repo}disable-sudo/dist/index.cjs`], {
        env: { ...subEnv, GITHUB_ACTION_REPOSITORY: "someone/else" },
        uid: NOBODY,
      }));
      assert.equal(forged.code, 1);
      assert.match(
        forged.stdout,
        /^::error::error: unauthorized \(action someone\/else is not owner\/egress\)/,
      );
      const disable = await output(
        runner.step([NODE!, `${repo}disable-sudo/dist/index.cjs`], { env: subEnv, uid: NOBODY }),
      );
      assert.equal(disable.stdout, "✓ sudo disabled\n");
      assert.equal(await read(paths.sudoersRunner), "");

      // post: status, shutdown, summary, artifact, verdict (denied in enforce mode ⇒ fails).
      const post = await output(runner.step([NODE!, `${repo}action/dist/post.cjs`], {
        env: {
          ...env,
          ...stateEnv,
          ACTIONS_RUNTIME_TOKEN: fakeRuntimeToken(),
          ACTIONS_RESULTS_URL: results.url,
        },
      }));
      daemonRunning = false;
      assert.equal(post.code, 1, `${post.stdout}\n${post.stderr}`);
      assert.match(post.stdout, /^::error::egress denied 1 connection \(see the job summary\)$/m);
      assert.match(post.stdout, /uploaded the connection log as artifact egress-connections/);
      assert.doesNotMatch(post.stdout, /egress was not running|did not shut down|degraded/);

      const summary = await Deno.readTextFile(files.summary);
      assert.match(summary, /Mode: \*\*enforce\*\* · allowed: \*\*\d+\*\* · denied: \*\*1\*\*/);
      assert.ok(summary.includes(`### Step ${codeCell("__run_2")}`), summary);
      assert.ok(
        summary.includes(
          `| ❌ denied | ${codeCell(`http://${topology.internetIp}:8080/blocked`)} | ${
            codeCell("/usr/bin/curl")
          } |`,
        ),
        summary,
      );
      assert.ok(summary.includes("### Suggested policy"));
      const log = (await read(`${root}/var/log/egress/connections.jsonl`))!;
      const denied = log.trim().split("\n").map((l) => JSON.parse(l)).filter((l) => l.policy === "deny");
      assert.equal(denied.length, 1);
      assert.equal(denied[0].url, `http://${topology.internetIp}:8080/blocked?token=***`);
      assert.equal(denied[0].step, "__run_2");
      const zip = await unzip(results.received.blob!);
      assert.deepEqual(Object.keys(zip), ["connections.jsonl"]);
      assert.equal(zip["connections.jsonl"], log);

      // Everything restored, every rule removed.
      assert.equal(await read(paths.sudoersRunner), SUDOERS);
      assert.equal(await read(paths.usernsClone), "1\n");
      assert.equal(await read(paths.systemCaBundle), BUNDLE);
      assert.equal(await read(paths.runc), RUNC);
      assert.equal(await read(paths.caShared), undefined);
      assert.equal(await read(paths.localCaCert), undefined);
      assert.equal(await read(`${root}/run/egress/ca-key.pem`), undefined, "the CA key is deleted");
      assert.equal(await read(`${root}/run/egress/control-token`), undefined, "the token is deleted");
      assert.equal(await read(`${root}/run/egress.sock`), undefined);
      assert.equal(await read(`${root}/run/egress.ready`), undefined);
      const rules = await run([...topology.runner.prefix(), "iptables-save"]);
      assert.doesNotMatch(rules.stdout, /EGRESS/);
    } finally {
      if (daemonRunning) await sendControlCommand(`${sim!.root}/run/egress.sock`, "shutdown").catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, daemonRunning ? 2000 : 0));
      await results.close();
      await runner.remove();
      await topology.remove();
      await sim?.remove();
    }
  },
);

/** argv, executable and working directory of a process. */
function processInfo(pid: number): { argv: string[]; exe: string; cwd: string; environ: string[] } {
  return {
    argv: Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter(Boolean),
    exe: Deno.readLinkSync(`/proc/${pid}/exe`),
    cwd: Deno.readLinkSync(`/proc/${pid}/cwd`),
    environ: Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0"),
  };
}

/** Every entry below `dir`: root:root, directories 0755, files 0644 (those in `executables` 0755), no links. */
function assertRootOwnedTree(dir: string, executables: string[] = []): number {
  let count = 0;
  const walk = (path: string) => {
    const stat = Deno.lstatSync(path);
    assert.ok(stat.isDirectory || stat.isFile, `${path} is a file or directory`);
    assert.equal(stat.uid, 0, `${path} owned by root`);
    assert.equal(stat.gid, 0, `${path} group root`);
    const want = stat.isDirectory || executables.includes(path) ? 0o755 : 0o644;
    assert.equal(stat.mode! & 0o7777, want, `${path} mode ${(stat.mode! & 0o7777).toString(8)}`);
    count++;
    if (stat.isDirectory) { for (const entry of Deno.readDirSync(path)) walk(`${path}/${entry.name}`); }
  };
  walk(dir);
  return count;
}

/** Waits until the operational log shows `count` workers started, the last one listening. */
async function listeningWorker(oplogPath: string, count: number): Promise<number> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const text = (await read(oplogPath)) ?? "";
    const pids = [...text.matchAll(/worker started: pid (\d+)/g)].map((m) => Number(m[1]));
    const last = pids.at(-1);
    if (pids.length >= count && last !== undefined && text.includes(`worker ${last}: listening`)) return last;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no listening worker number ${count}:\n${await read(oplogPath)}`);
}

testWhen(
  netnsTestsUnmet(["/usr/bin/curl"]) ?? (NODE ? undefined : "needs node"),
  "action: a killed worker is restarted; five failures in a row leave egress degraded and closed; post fails",
  async () => {
    const topology = await createTopology("sup");
    const runner = await FakeRunner.create("sup");
    let sim: Awaited<ReturnType<typeof createSimulatedRunner>> | undefined;
    let daemonRunning = false;
    try {
      sim = await createSimulatedRunner(runner, NODE!, {
        warm: true,
        inputs: { "INPUT_UPLOAD-LOG": "false" },
      });
      const { root, env, files } = sim;
      const socket = `${root}/run/egress.sock`;
      const oplogPath = `${root}/var/log/egress/egress.log`;
      // The action as the runner downloads it: a checkout the runner user (here: nobody) owns.
      const checkout = await copyCheckout(`${root}/home/runner/work/_actions/owner/egress/v1`, NOBODY);
      const pre = await output(
        runner.step([NODE!, `${checkout}/action/dist/pre.cjs`], { env, netns: topology.runner.path }),
      );
      assert.equal(pre.code, 0, `pre failed:\n${pre.stdout}\n${pre.stderr}`);
      daemonRunning = true;

      // pre installed Deno and the daemon's code root-owned, named by version and content hash.
      const lib = `${root}/usr/local/lib/egress`;
      const installs = [...Deno.readDirSync(lib)].map((entry) => entry.name);
      assert.equal(installs.length, 1, installs.join(" "));
      assert.match(installs[0], /^[0-9A-Za-z.+_-]+-[0-9a-f]{16}$/);
      const dir = `${lib}/${installs[0]}`;
      assert.ok(pre.stdout.includes(`egress: the daemon runs from ${dir} (root-owned copy, `), pre.stdout);
      for (let up = dir; up !== ""; up = up.slice(0, up.lastIndexOf("/"))) {
        const stat = Deno.statSync(up);
        assert.equal(stat.uid, 0, `${up} owned by root`);
        assert.ok((stat.mode! & 0o022) === 0 || (stat.mode! & 0o1000) !== 0, `${up} only root can change`);
      }
      assert.equal(Deno.statSync(dir).mode! & 0o7777, 0o755);
      assert.ok(assertRootOwnedTree(`${dir}/app`) > 100);
      assertRootOwnedTree(`${dir}/bin`, [`${dir}/bin/deno`]);
      const denoDir = Deno.statSync(`${dir}/deno-dir`);
      assert.equal(denoDir.uid, 0);
      assert.equal(denoDir.mode! & 0o022, 0);
      assert.equal(
        Deno.readTextFileSync(`${dir}/app/src/daemon/worker.ts`),
        Deno.readTextFileSync(`${repo}src/daemon/worker.ts`),
      );
      assert.ok(Deno.statSync(`${dir}/deno-dir/npm/registry.npmjs.org/node-forge`).isDirectory, "seeded");

      // Supervisor and worker run that Deno, that config and entry, in that directory.
      const expectCode = (pid: number, script: string) => {
        const info = processInfo(pid);
        assert.equal(info.exe, `${dir}/bin/deno`, `exe of ${pid}`);
        assert.equal(info.argv[0], `${dir}/bin/deno`);
        assert.equal(info.cwd, `${dir}/app`, `cwd of ${pid}`);
        assert.equal(info.argv[info.argv.indexOf("--config") + 1], `${dir}/app/deno.json`);
        assert.ok(info.argv.includes(`${dir}/app/${script}`), info.argv.join(" "));
        assert.ok(info.environ.includes(`DENO_DIR=${dir}/deno-dir`), `DENO_DIR of ${pid}`);
        assert.ok(!info.argv.some((arg) => arg.startsWith(checkout)), info.argv.join(" "));
      };
      const firstWorker = await listeningWorker(oplogPath, 1);
      const supervisorPid = Number(
        /^PPid:\s+(\d+)$/m.exec(Deno.readTextFileSync(`/proc/${firstWorker}/status`))![1],
      );
      expectCode(supervisorPid, "mod.ts");
      expectCode(firstWorker, "src/daemon/worker.ts");

      // A later step (the runner user) plants code in the checkout's worker: a restarted worker must
      // not load it. Control: the planted line does run when the checkout's copy is loaded.
      const planted = `${root}/tmp/planted`;
      const plant = await output(runner.step([
        "sed",
        "-i",
        `1i Deno.writeTextFileSync(${JSON.stringify(planted)}, "root code from the checkout");`,
        `${checkout}/src/daemon/worker.ts`,
      ], { uid: NOBODY }));
      assert.equal(plant.code, 0, plant.stderr);
      await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--config", `${checkout}/deno.json`, `${checkout}/src/daemon/worker.ts`],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.equal(await read(planted), "root code from the checkout", "control: the plant works");
      await Deno.remove(planted);
      const curl = () =>
        output(runner.step(
          statusCurl(`http://${topology.internetIp}:8080/x`, 5),
          { netns: topology.runner.path, uid: NOBODY },
        ));
      assert.equal((await curl()).stdout, "403");

      // One crash: traffic is refused while no worker runs, then served again by a new worker.
      const first = firstWorker;
      Deno.kill(first, "SIGKILL");
      const during = await curl();
      assert.notEqual(
        during.stdout,
        "403",
        "no worker: the redirected connection is refused, never let through",
      );
      const second = await listeningWorker(oplogPath, 2);
      assert.notEqual(second, first);
      expectCode(second, "src/daemon/worker.ts");
      assert.equal(await read(planted), undefined, "the restarted worker ran the root-owned copy");
      assert.equal((await curl()).stdout, "403");
      const afterOne = await sendControlCommand(socket, "status");
      assert.match(afterOne.text, /"state":"running","rules":\d+,"restarts":1,/);

      // Four more crashes right after start: the fifth consecutive failure gives up.
      let pid = second;
      for (let n = 3; n <= 6; n++) {
        Deno.kill(pid, "SIGKILL");
        if (n === 6) break;
        pid = await listeningWorker(oplogPath, n);
      }
      let degraded = "";
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && !degraded.includes('"degraded"')) {
        degraded = (await sendControlCommand(socket, "status")).text;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(degraded, /"state":"degraded"/);
      assert.match((await read(oplogPath))!, /ERROR worker failed 5 times in a row/);
      const closed = await curl();
      assert.notEqual(closed.stdout, "403");
      assert.notEqual(closed.stdout, "200", "degraded is fail closed");

      const state = parseFileCommands(await Deno.readTextFile(files.state));
      const stateEnv = Object.fromEntries(Object.entries(state).map(([k, v]) => [`STATE_${k}`, v]));
      const post = await output(
        runner.step([NODE!, `${checkout}/action/dist/post.cjs`], { env: { ...env, ...stateEnv } }),
      );
      daemonRunning = false;
      assert.equal(post.code, 1);
      assert.equal(await read(planted), undefined, "no worker ever loaded the planted code");
      assert.match(
        post.stdout,
        /^::error::egress was degraded: its worker failed repeatedly and traffic was blocked$/m,
      );
      assert.doesNotMatch(post.stdout, /did not shut down/);
      assert.equal(await read(socket), undefined);
      const rules = await run([...topology.runner.prefix(), "iptables-save"]);
      assert.doesNotMatch(rules.stdout, /EGRESS/);
    } finally {
      if (daemonRunning) await sendControlCommand(`${sim!.root}/run/egress.sock`, "shutdown").catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, daemonRunning ? 2000 : 0));
      await runner.remove();
      await topology.remove();
      await sim?.remove();
    }
  },
);
