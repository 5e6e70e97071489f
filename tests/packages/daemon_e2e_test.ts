// End to end through the real daemon (extras.md): `egress start --package-check
// --package-check-url …` with EGRESS_GITHUB_TOKEN in a runner namespace, unprivileged curl in the
// test cgroup, and a registry-shaped server plus the reputation API in the internet namespace
// (tests/packages/fixtures/registry_server.ts). Root only; ignored with the reason while
// `egress start` does not pass the package-check flags to the proxy.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import {
  Background,
  client,
  createTestPki,
  netnsTestsUnmet,
  type Topology,
  withTopology,
} from "../helpers/netns.ts";
import { daemonPaths, DaemonRun, DENO_ENV, removeDaemonLeftovers } from "../daemon/daemon_rig.ts";
import { loadRealParts } from "../../src/daemon/parts.ts";
import { parseStartArgs } from "../../src/daemon/config.ts";

const NAMES = ["registry.npmjs.org", "files.pythonhosted.org", "api.github.com"];
const JOB_TOKEN = "ghs_e2eJobToken0123456789abcdefABCDEF";

async function unmetHere(): Promise<string | undefined> {
  const base = netnsTestsUnmet();
  if (base) return base;
  try {
    await loadRealParts();
  } catch (error) {
    return (error as Error).message;
  }
  try {
    parseStartArgs(["--package-check", "--package-check-url", "http://127.0.0.1:1"]);
  } catch (error) {
    return `egress start does not take --package-check yet (${(error as Error).message}); ` +
      'see docs/tools.md "In the proxy\'s request path"';
  }
  return undefined;
}

const reason = await unmetHere();

type Internet = { server: Background; caPath: string; stop(): Promise<void> };

async function startRegistry(topology: Topology, dir: string): Promise<Internet> {
  const pki = await createTestPki(dir, NAMES, topology.internetIp);
  const script = new URL("./fixtures/registry_server.ts", import.meta.url).pathname;
  const server = new Background([
    ...topology.internet.prefix(),
    Deno.execPath(),
    "run",
    "-A",
    script,
    JSON.stringify({ certPem: pki.certPem, keyPem: pki.keyPem }),
  ], { env: DENO_ENV });
  await server.waitFor("registry server", () => server.stdout.includes('"ready":true'));
  return { server, caPath: pki.caPath, stop: async () => void await server.stop("SIGKILL") };
}

function curl(topology: Topology, run: DaemonRun, args: string[]) {
  const resolves = NAMES.flatMap((name) => ["--resolve", `${name}:443:${topology.internetIp}`]);
  return client(
    { netns: topology.runner, cgroup: topology.cgroup },
    [
      "/usr/bin/curl",
      "-sS",
      "--max-time",
      "8",
      "-w",
      "\n%{http_code}",
      "--cacert",
      run.paths.egressCa,
      ...resolves,
      ...args,
    ],
  );
}

function served(internet: Internet): Array<Record<string, unknown>> {
  return internet.server.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** Starts the daemon with the package check against the namespace's API and the job token set. */
async function withDaemon(
  topology: Topology,
  tag: string,
  audit: boolean,
  fn: (run: DaemonRun, internet: Internet) => Promise<void>,
): Promise<void> {
  const paths = await daemonPaths(tag);
  const internet = await startRegistry(topology, paths.dir);
  // The daemon inherits this process's environment (Background adds DENO_ENV to it).
  Deno.env.set("EGRESS_GITHUB_TOKEN", JOB_TOKEN);
  let run: DaemonRun | undefined;
  try {
    run = await DaemonRun.start(topology, paths, {
      policy: "registry.npmjs.org\nfiles.pythonhosted.org\nGET https://api.github.com/repos/*\n",
      upstreamCa: internet.caPath,
      extra: [
        "--package-check",
        "--package-check-url",
        `http://${topology.internetIp}:8080`,
        ...(audit ? ["--audit"] : []),
      ],
    });
    await fn(run, internet);
  } finally {
    Deno.env.delete("EGRESS_GITHUB_TOKEN");
    if (run) assert.equal((await run.stop()).code, 0, "daemon exits 0");
    await internet.stop();
    removeDaemonLeftovers(paths);
  }
}

testWhen(
  reason,
  "daemon e2e: --package-check blocks a flagged download, passes a clean one, tags the token",
  async () => {
    await withTopology("pk", async (topology) => {
      await withDaemon(topology, "pkcheck", false, async (run, internet) => {
        const evil = await curl(topology, run, ["https://registry.npmjs.org/evil-pkg/-/evil-pkg-1.0.0.tgz"]);
        assert.equal(evil.stdout, "Blocked by package check: pkg:npm/evil-pkg@1.0.0\n403", evil.stderr);
        const clean = await curl(topology, run, [
          "https://files.pythonhosted.org/packages/aa/bb/requests-2.31.0-py3-none-any.whl",
        ]);
        assert.equal(
          clean.stdout,
          "tarball of /packages/aa/bb/requests-2.31.0-py3-none-any.whl\n200",
          clean.stderr,
        );
        const line = await run.waitForLine("blocked download", (l) => l.security_block === true);
        assert.equal(line.policy, "deny");
        assert.equal(line.reason, "package flagged: malware");
        assert.equal(line.purl, "pkg:npm/evil-pkg@1.0.0");
        assert.deepEqual(line.reasons, ["malware"]);
        assert.equal(line.rule, "registry.npmjs.org");
        assert.equal(line.exe, "/usr/bin/curl");
        const servedPaths = served(internet).map((s) => s.served).filter(Boolean);
        assert.ok(!servedPaths.some((p) => String(p).includes("evil")), JSON.stringify(servedPaths));
        const lookups = served(internet).filter((s) => s.lookup);
        assert.deepEqual(lookups.map((s) => s.lookup), [
          "pkg:npm/evil-pkg@1.0.0",
          "pkg:pypi/requests@2.31.0",
        ]);
        assert.match(String(lookups[0].agent), /^egress\/\S+$/);

        const api = await curl(topology, run, [
          "-H",
          `Authorization: token ${JOB_TOKEN}`,
          "https://api.github.com/repos/o/r/contents/x",
        ]);
        assert.equal(api.stdout.split("\n").at(-1), "200", api.stderr);
        const tagged = await run.waitForLine("tagged request", (l) => l.github_token === true);
        assert.equal(tagged.url, "https://api.github.com/repos/o/r/contents/x");
        const logText = await Deno.readTextFile(run.paths.log);
        assert.ok(!logText.includes(JOB_TOKEN), "the token is never logged");
        const oplogText = await Deno.readTextFile(run.paths.oplog).catch(() => "");
        assert.ok(!oplogText.includes(JOB_TOKEN), "nor in the operational log");
      });
    });
  },
);

testWhen(
  reason,
  "daemon e2e: --package-check in audit mode forwards a flagged download and logs it",
  async () => {
    await withTopology("pa", async (topology) => {
      await withDaemon(topology, "pkaudit", true, async (run, internet) => {
        const evil = await curl(topology, run, ["https://registry.npmjs.org/evil-pkg/-/evil-pkg-1.0.0.tgz"]);
        assert.equal(evil.stdout, "tarball of /evil-pkg/-/evil-pkg-1.0.0.tgz\n200", evil.stderr);
        const line = await run.waitForLine("flagged download", (l) => l.security_block === true);
        assert.equal(line.policy, "deny");
        assert.equal(line.audit, true);
        assert.equal(line.reason, "package flagged: malware");
        assert.ok(
          served(internet).some((s) => s.served === "registry.npmjs.org/evil-pkg/-/evil-pkg-1.0.0.tgz"),
        );
      });
    });
  },
);
