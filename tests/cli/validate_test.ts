import assert from "node:assert/strict";
import { runCli, tempFiles } from "./run_cli.ts";

const WORKFLOW = `name: ci
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Harden runner
        uses: org/egress@v1
        with:
          policy: |
            github.com
            bad.com:70000
      - uses: org/egress@v1
        with:
          policy: "a.com\\nb.com:0"
`;

function oneLine(stderr: string) {
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line expected, got: ${stderr}`);
  assert.ok(!/\n\s+at /.test(stderr), "no stack trace");
  return lines[0];
}

Deno.test("validate: valid policy ⇒ 0; errors ⇒ 1 with position, echoed line and caret", async () => {
  const t = await tempFiles({
    "ok.txt": "github.com\n*.npmjs.org\n",
    "bad.txt": "github.com\n\tbad.com:70000\n",
  });
  try {
    const ok = await runCli(["validate", "ok.txt"], { cwd: t.dir });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "ok.txt: 7 rules (5 built-in), OK\n");
    const bad = await runCli(["validate", "bad.txt"], { cwd: t.dir });
    assert.equal(bad.code, 1);
    assert.equal(
      bad.stdout,
      "bad.txt:2:10: error: port 70000 is outside 1..65535\n\tbad.com:70000\n\t        ^\nbad.txt: 6 rules (5 built-in), 1 error\n",
    );
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: warnings alone ⇒ 0; -q prints errors only", async () => {
  const t = await tempFiles({ "w.txt": "x.com exe=/a exe=/b\n", "e.txt": "x.com exe=/a exe=/b\ny.com:0\n" });
  try {
    const w = await runCli(["validate", "w.txt"], { cwd: t.dir });
    assert.equal(w.code, 0);
    assert.match(w.stdout, /^w\.txt:1:\d+: warning: /m);
    assert.match(w.stdout, /1 warning\n$/);
    const q = await runCli(["validate", "-q", "w.txt"], { cwd: t.dir });
    assert.equal(q.code, 0);
    assert.equal(q.stdout, "");
    const qe = await runCli(["validate", "--quiet", "e.txt"], { cwd: t.dir });
    assert.equal(qe.code, 1);
    assert.match(qe.stdout, /^e\.txt:2:7: error: port 0 is outside 1\.\.65535\ny\.com:0\n {6}\^\n$/);
    assert.doesNotMatch(qe.stdout, /warning/);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: workflow positions: block scalar real line/column, quoted scalar start + policy line", async () => {
  const t = await tempFiles({ "ci.yml": WORKFLOW });
  try {
    const r = await runCli(["validate", "ci.yml"], { cwd: t.dir });
    assert.equal(r.code, 1);
    const lines = r.stdout.split("\n");
    assert.equal(lines[0], "ci.yml:13:21: error: port 70000 is outside 1..65535");
    assert.equal(lines[1], "            bad.com:70000");
    assert.equal(lines[2], "                    ^");
    assert.equal(lines[3], "ci.yml:16:19: error: port 0 is outside 1..65535 (policy line 2)");
    assert.equal(lines[4], "b.com:0");
    assert.equal(lines[5], "      ^");
    assert.equal(lines[6], "ci.yml: jobs.build.steps[1] (Harden runner): 6 rules (5 built-in), 1 error");
    assert.equal(lines[7], "ci.yml: jobs.build.steps[2] (step 2): 6 rules (5 built-in), 1 error");
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: --json gives files with location, rule count, errors and warnings", async () => {
  const t = await tempFiles({ "ci.yml": WORKFLOW, "p.txt": "x.com exe=/a exe=/b\n" });
  try {
    const r = await runCli(["validate", "--json", "ci.yml", "p.txt"], { cwd: t.dir });
    assert.equal(r.code, 1);
    const result = JSON.parse(r.stdout);
    assert.deepEqual(
      result.files.map((
        f: { file: string; location: string | null; rules: number },
      ) => [f.file, f.location, f.rules]),
      [
        ["ci.yml", "jobs.build.steps[1] (Harden runner)", 6],
        ["ci.yml", "jobs.build.steps[2] (step 2)", 6],
        ["p.txt", null, 6],
      ],
    );
    assert.deepEqual(result.files[0].errors, [
      { line: 2, column: 9, message: "port 70000 is outside 1..65535", text: "bad.com:70000" },
    ]);
    assert.equal(result.files[2].errors.length, 0);
    assert.equal(result.files[2].warnings.length, 1);
    assert.equal(result.files[2].warnings[0].line, 1);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: --dump-rules prints built-ins once, then every policy's rules, 2-space JSON", async () => {
  const wf = WORKFLOW.replace("bad.com:70000", "bad.com:8443").replace("b.com:0", "b.com:22");
  const t = await tempFiles({ "ci.yml": wf });
  try {
    const r = await runCli(["validate", "--dump-rules", "ci.yml"], { cwd: t.dir });
    assert.equal(r.code, 0, r.stderr);
    const rules = JSON.parse(r.stdout);
    assert.equal(r.stdout, JSON.stringify(rules, null, 2) + "\n");
    assert.deepEqual(rules.map((x: { line: number }) => x.line), [0, 0, 0, 0, 0, 1, 2, 1, 2]);
    assert.deepEqual(rules.slice(5).map((x: { target: string }) => x.target), [
      "github.com",
      "bad.com",
      "a.com",
      "b.com",
    ]);
    assert.deepEqual(rules[8].port, [22]);
    assert.deepEqual(rules[5].attrs, { cgroup: "/system.slice/hosted-compute-agent.service" });
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: --no-defaults / --no-runner-cgroup select the library options", async () => {
  const t = await tempFiles({ "p.txt": "github.com\n" });
  try {
    const dump = async (...flags: string[]) => {
      const r = await runCli(["validate", "--dump-rules", ...flags, "p.txt"], { cwd: t.dir });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as Array<{ line: number; attrs: unknown }>;
    };
    const noDefaults = await dump("--no-defaults");
    assert.deepEqual(noDefaults.map((x) => [x.line, x.attrs]), [[1, {
      cgroup: "/system.slice/hosted-compute-agent.service",
    }]]);
    const noCgroup = await dump("--no-runner-cgroup");
    assert.equal(noCgroup.filter((x) => x.line === 0).length, 5);
    assert.deepEqual(noCgroup[5].attrs, {});
    const plain = await dump("--no-defaults", "--no-runner-cgroup");
    assert.deepEqual(plain.map((x) => [x.line, x.attrs]), [[1, {}]]);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: stdin, --repo placeholders, --action", async () => {
  const wf =
    "jobs:\n  j:\n    steps:\n      - uses: me/firewall@v2\n        with:\n          policy: x.com:0\n";
  const t = await tempFiles({ "wf.yml": wf });
  try {
    const stdin = await runCli(["validate", "-"], { cwd: t.dir, stdin: "github.com\nx.com:0\n" });
    assert.equal(stdin.code, 1);
    assert.match(stdin.stdout, /^<stdin>:2:7: error: port 0 is outside 1\.\.65535$/m);
    const repo = await runCli(["validate", "--dump-rules", "--no-defaults", "--repo", "octo/hello", "-"], {
      cwd: t.dir,
      stdin: "{owner}.example.com\n",
    });
    assert.equal(repo.code, 0, repo.stderr);
    assert.equal(JSON.parse(repo.stdout)[0].target, "octo.example.com");
    const standIn = await runCli(["validate", "-"], {
      cwd: t.dir,
      stdin: "https://github.com/{owner}/{repo}/*\n",
    });
    assert.equal(standIn.code, 0);
    assert.match(standIn.stderr, /warning: .*stand-in "owner\/repo"/);
    const none = await runCli(["validate", "wf.yml"], { cwd: t.dir });
    assert.equal(none.code, 0);
    assert.equal(none.stdout, "wf.yml: note: no egress policy found\n");
    const action = await runCli(["validate", "--action", "me/firewall", "wf.yml"], { cwd: t.dir });
    assert.equal(action.code, 1);
    assert.match(action.stdout, /^wf\.yml:6:19: error: port 0 is outside 1\.\.65535 \(policy line 1\)$/m);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: only .yml/.yaml files are workflows; stdin and other files are policies", async () => {
  const t = await tempFiles({ "wf.txt": WORKFLOW, "broken.txt": "a: [\n" });
  try {
    for (
      const [args, stdin] of [[["validate", "-"], WORKFLOW], [["validate", "wf.txt"], undefined]] as const
    ) {
      const r = await runCli([...args], { cwd: t.dir, stdin });
      assert.equal(r.code, 1, r.stdout);
      assert.doesNotMatch(r.stdout, /jobs\.build/, "not read as a workflow");
      assert.match(r.stdout, /^(<stdin>|wf\.txt):1:\d+: error: /m);
    }
    // Not YAML but not a .yml file either: a policy error (exit 1), not invalid YAML (exit 2).
    const broken = await runCli(["validate", "broken.txt"], { cwd: t.dir });
    assert.equal(broken.code, 1);
    assert.match(broken.stdout, /^broken\.txt:1:\d+: error: /m);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: missing file, invalid YAML, unknown flag ⇒ 2 with one clear line", async () => {
  const t = await tempFiles({ "bad.yml": "jobs:\n  a: [\n", "ok.txt": "github.com\n" });
  try {
    const missing = await runCli(["validate", "ok.txt", "nope.txt"], { cwd: t.dir });
    assert.equal(missing.code, 2);
    assert.equal(missing.stdout, "", "nothing printed before the failure");
    assert.equal(oneLine(missing.stderr), "egress validate: Cannot read nope.txt: no such file");
    const yaml = await runCli(["validate", "bad.yml"], { cwd: t.dir });
    assert.equal(yaml.code, 2);
    assert.match(oneLine(yaml.stderr), /^egress validate: Cannot parse bad\.yml:\d+:\d+: invalid YAML: /);
    const flag = await runCli(["validate", "--frobnicate", "ok.txt"], { cwd: t.dir });
    assert.equal(flag.code, 2);
    assert.equal(oneLine(flag.stderr), 'egress validate: unknown flag "--frobnicate"');
    await Deno.writeFile(`${t.dir}/binary.txt`, new Uint8Array([0xff, 0xfe, 0x20, 0x62, 0x0a]));
    const binary = await runCli(["validate", "binary.txt"], { cwd: t.dir });
    assert.equal(binary.code, 2);
    assert.equal(oneLine(binary.stderr), "egress validate: Cannot read binary.txt: not UTF-8 text");
    const dir = await runCli(["validate", "."], { cwd: t.dir });
    assert.equal(dir.code, 2);
    assert.match(oneLine(dir.stderr), /^egress validate: Cannot read \.: /);
  } finally {
    await t.cleanup();
  }
});

Deno.test("validate: without FILE checks .github/workflows/*.y*ml, none there ⇒ 2", async () => {
  const t = await tempFiles({
    ".github/workflows/a.yml": WORKFLOW,
    ".github/workflows/b.yaml":
      "jobs:\n  j:\n    steps:\n      - uses: o/egress\n        with:\n          policy: ok.com\n",
    ".github/workflows/notes.txt": "ignored:0\n",
  });
  const empty = await tempFiles({});
  try {
    const r = await runCli(["validate"], { cwd: t.dir });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^\.github\/workflows\/a\.yml:13:21: error: /m);
    assert.match(
      r.stdout,
      /^\.github\/workflows\/b\.yaml: jobs\.j\.steps\[0\] \(step 0\): 6 rules \(5 built-in\), OK$/m,
    );
    assert.doesNotMatch(r.stdout, /notes\.txt/);
    const none = await runCli(["validate"], { cwd: empty.dir });
    assert.equal(none.code, 2);
    assert.match(oneLine(none.stderr), /^egress validate: Cannot find workflows/);
  } finally {
    await t.cleanup();
    await empty.cleanup();
  }
});
