// The bundled pre step fails fast, before anything is installed or started: inputs, the runner
// gate, and policy errors as annotations pointing at the policy line.
import assert from "node:assert/strict";
import { findNode } from "../../src/runner/runc_wrapper.ts";
import { testWhen } from "../helpers/requirements.ts";
import { annotation, parseBooleanInput } from "../../action/lib/actions.ts";
import { DAEMON_PATH, daemonEnvironment, isFreshFile } from "../../action/lib/pre_run.ts";

const repo = new URL("../../", import.meta.url).pathname;
const NODE = findNode("/usr/local/bin:/usr/bin:/bin");
const RUNNER = {
  RUNNER_OS: "Linux",
  RUNNER_ARCH: "X64",
  RUNNER_ENVIRONMENT: "github-hosted",
  ImageOS: "ubuntu24",
};

async function pre(env: Record<string, string>): Promise<{ code: number; stdout: string; state: string }> {
  const dir = await Deno.makeTempDir({ prefix: "egress-pre-" });
  try {
    await Deno.writeTextFile(`${dir}/state`, "");
    const out = await new Deno.Command(NODE!, {
      args: [`${repo}action/dist/pre.cjs`],
      env: {
        PATH: "/usr/bin:/bin",
        GITHUB_STATE: `${dir}/state`,
        GITHUB_ENV: `${dir}/env`,
        RUNNER_TEMP: dir,
        RUNNER_TOOL_CACHE: `${dir}/cache`,
        ...env,
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      state: await Deno.readTextFile(`${dir}/state`),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const noNode = NODE ? undefined : "needs node";

testWhen(
  noNode,
  "pre: policy errors are annotations at the policy line; enforce mode fails before installing",
  async () => {
    const result = await pre({ ...RUNNER, INPUT_POLICY: "example.com\nhttps://[bad\n*.*.example.com\n" });
    assert.equal(result.code, 1);
    const errors = result.stdout.split("\n").filter((line) =>
      line.startsWith("::error title=egress policy::")
    );
    assert.ok(errors.length >= 1, result.stdout);
    assert.match(errors[0], /^::error title=egress policy::line 2, column \d+: \S/);
    assert.match(result.stdout, /^::error::The egress policy has errors \(see the annotations above\)$/m);
    assert.doesNotMatch(result.stdout, /Deno .* (installed|from the cache)/, "nothing installed");
    assert.equal(result.state, "", "no daemon started");
  },
);

testWhen(noNode, "pre: bad boolean inputs and other runners fail naming the input or check", async () => {
  const bad = await pre({ ...RUNNER, INPUT_AUDIT: "yes" });
  assert.equal(bad.code, 1);
  assert.equal(bad.stdout, "::error::input audit must be true or false\n");
  const upload = await pre({ ...RUNNER, "INPUT_UPLOAD-LOG": "sometimes" });
  assert.equal(upload.stdout, "::error::input upload-log must be true, false or auto\n");
  const mac = await pre({ ...RUNNER, RUNNER_OS: "macOS" });
  assert.equal(
    mac.stdout,
    '::error::egress supports GitHub-hosted Ubuntu 24.04 x64 runners only: RUNNER_OS is "macOS", expected "Linux"\n',
  );
  const selfHosted = await pre({ ...RUNNER, RUNNER_ENVIRONMENT: "self-hosted" });
  assert.match(selfHosted.stdout, /RUNNER_ENVIRONMENT is "self-hosted", expected "github-hosted"/);
});

Deno.test("inputs: booleans in any case, empty is the default; annotations escape", () => {
  assert.equal(parseBooleanInput("audit", "TRUE", false), true);
  assert.equal(parseBooleanInput("audit", "False", true), false);
  assert.equal(parseBooleanInput("audit", "", true), true);
  assert.throws(() => parseBooleanInput("audit", "1", false), /input audit must be true or false/);
  assert.equal(
    annotation("error", "50%\nnext", { title: "a:b,c" }),
    "::error title=a%3Ab%2Cc::50%25%0Anext",
  );
});

Deno.test("pre: the daemon gets only the listed variables and a PATH of system directories", () => {
  const env = daemonEnvironment(
    {
      PATH: "/home/runner/.local/bin:/opt/hostedtoolcache/node/bin:/usr/bin",
      HOME: "/home/runner",
      GITHUB_REPOSITORY: "owner/repo",
      GITHUB_ACTION_REPOSITORY: "owner/egress",
      ACTIONS_RUNTIME_TOKEN: "rt",
      INPUT_POLICY: "example.com",
      SOME_SECRET: "s",
    },
    { githubToken: "ghs_x" },
    "/cache/deno-dir",
  );
  assert.deepEqual(env, {
    PATH: DAEMON_PATH,
    GITHUB_REPOSITORY: "owner/repo",
    GITHUB_ACTION_REPOSITORY: "owner/egress",
    EGRESS_GITHUB_TOKEN: "ghs_x",
    ACTIONS_RUNTIME_TOKEN: "rt",
    DENO_DIR: "/cache/deno-dir",
    DENO_NO_UPDATE_CHECK: "1",
  });
  for (const dir of DAEMON_PATH.split(":")) assert.match(dir, /^\/(usr\/(local\/)?)?s?bin$/);
});

Deno.test("pre: a ready file left by an earlier run does not count", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-ready-" });
  try {
    const path = `${dir}/egress.ready`;
    assert.equal(isFreshFile(path, Date.now()), false, "missing");
    await Deno.writeTextFile(path, "1\n");
    const old = new Date(Date.now() - 60_000);
    await Deno.utime(path, old, old);
    assert.equal(isFreshFile(path, Date.now()), false, "stale");
    await Deno.writeTextFile(path, "2\n");
    assert.equal(isFreshFile(path, Date.now()), true, "written now");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
