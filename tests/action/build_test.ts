// The committed action bundles must be what scripts/build_action.ts builds from the sources.
import assert from "node:assert/strict";
import { ACTION_ENTRIES, buildAction } from "../../scripts/build_action.ts";
import { commandExists, testWhen } from "../helpers/requirements.ts";

const repo = new URL("../../", import.meta.url).pathname;

testWhen(
  commandExists("/usr/bin/node") || commandExists("/usr/local/bin/node") ? undefined : "needs node",
  "action bundles: committed files equal a fresh build",
  async () => {
    const out = await Deno.makeTempDir({ prefix: "egress-action-build-" });
    try {
      const written = await buildAction(out);
      assert.equal(written.length, Object.keys(ACTION_ENTRIES).length);
      const stale: string[] = [];
      for (const bundle of Object.keys(ACTION_ENTRIES)) {
        const fresh = await Deno.readTextFile(`${out}/${bundle}`);
        let committed = "";
        try {
          committed = await Deno.readTextFile(`${repo}${bundle}`);
        } catch {
          committed = "(missing)";
        }
        if (fresh !== committed) stale.push(bundle);
      }
      assert.deepEqual(stale, [], `out of date: ${stale.join(", ")}; run deno task build:action and commit`);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
);

Deno.test("action.yml files point at the bundles", async () => {
  const main = await Deno.readTextFile(`${repo}action.yml`);
  for (
    const key of [
      "pre: action/dist/pre.cjs",
      "main: action/dist/main.cjs",
      "post: action/dist/post.cjs",
      "using: node24",
    ]
  ) {
    assert.ok(main.includes(key), key);
  }
  for (
    const input of [
      "policy",
      "audit",
      "allow-sudo",
      "socket-security",
      "github-token",
      "container-certs",
      "upload-log",
      "fail-on-deny",
    ]
  ) {
    assert.match(main, new RegExp(`^  ${input}:$`, "m"), input);
  }
  for (const sub of ["disable-sudo", "enable-sudo"]) {
    const text = await Deno.readTextFile(`${repo}${sub}/action.yml`);
    assert.ok(text.includes("using: node24") && text.includes("main: dist/index.cjs"), sub);
    assert.match(
      text,
      /^inputs:\n {2}token:\n( {4}.*\n)* {4}required: true$/m,
      `${sub} takes the control token`,
    );
    assert.ok(Object.keys(ACTION_ENTRIES).includes(`${sub}/dist/index.cjs`));
  }
});

Deno.test("the workflow hands the sub-actions the egress step's control-token output", async () => {
  const workflow = await Deno.readTextFile(`${repo}.github/workflows/egress.yml`);
  const uses = [...workflow.matchAll(/- uses: \.\/(disable|enable)-sudo\n(.*)\n(.*)\n/g)];
  assert.ok(uses.length >= 2);
  for (const use of uses) {
    assert.equal(use[2].trim(), "with:");
    assert.equal(use[3].trim(), "token: ${{ steps.egress.outputs.control-token }}");
  }
  assert.match(workflow, /- uses: \.\/\n {8}id: egress\n/);
});

Deno.test("the workflow's egress policies validate", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repo}mod.ts`,
      "validate",
      "--action",
      "./",
      "--repo",
      "owner/repo",
      `${repo}.github/workflows/egress.yml`,
    ],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.ok(text.split("\n").filter((line) => line.endsWith(", OK")).length >= 6, text);
});
