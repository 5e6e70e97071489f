import assert from "node:assert/strict";
import { inspectWorkflow, mapPolicyPosition, usesEgress } from "../../src/cli/workflow.ts";
import type { WorkflowPolicy } from "../../src/cli/workflow.ts";

function workflow(source: string, action?: string): WorkflowPolicy[] {
  const r = inspectWorkflow(source, { action });
  assert.equal(r.kind, "workflow");
  if (r.kind !== "workflow") throw new Error("unreachable");
  assert.deepEqual(r.problems, []);
  return r.policies;
}

/** 1-based line and column of `needle` in `source` (column in code points). */
function find(source: string, needle: string): { line: number; column: number } {
  const lines = source.split("\n");
  const i = lines.findIndex((l) => l.includes(needle));
  assert.ok(i >= 0, `${needle} not in source`);
  return { line: i + 1, column: Array.from(lines[i].slice(0, lines[i].indexOf(needle))).length + 1 };
}

const WF = `name: ci
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Harden
        uses: Org/Egress@v1
        with:
          policy: |
            github.com
            bad.com:70000
      - uses: org/egress
        with:
          policy: |-
            # comment

            x.com:0
      - uses: other/thing@v1
        with:
          policy: ignored.com:70000
  test:
    steps:
      - uses: org/egress@main
        with:
          policy: |+
            keep.com:99999

      - uses: org/egress@v2
        with:
          policy: |4
                indented.com:70000
      - uses: org/egress@v2
        with:
          policy: "quoted.com\\nsecond.com:70000"
      - uses: org/egress@v2
        with:
          policy: plain.com:70000
      - uses: org/egress@v2
        with:
          policy: ""
      - uses: me/custom-firewall@v1
        with:
          policy: custom.com
`;

Deno.test("workflow: finds egress steps with labels, ignores other actions and empty policies", () => {
  const policies = workflow(WF);
  assert.deepEqual(policies.map((p) => p.label), [
    "jobs.build.steps[1] (Harden)",
    "jobs.build.steps[2] (step 2)",
    "jobs.test.steps[0] (step 0)",
    "jobs.test.steps[1] (step 1)",
    "jobs.test.steps[2] (step 2)",
    "jobs.test.steps[3] (step 3)",
  ]);
  assert.equal(policies[0].text, "github.com\nbad.com:70000\n");
  assert.equal(policies[1].text, "# comment\n\nx.com:0");
  assert.equal(policies[2].text, "keep.com:99999\n\n");
  // |4 is relative to the mapping's indentation (10): content at 14, two spaces stay in the text.
  assert.equal(policies[3].text, "  indented.com:70000\n");
  assert.equal(policies[4].text, "quoted.com\nsecond.com:70000");
  // --action adds another action by name, case-insensitive, ref ignored.
  assert.equal(workflow(WF, "Me/Custom-Firewall").length, 7);
});

Deno.test("workflow: block scalar | maps to the real file line and column", () => {
  const [p] = workflow(WF);
  assert.equal(p.placement.style, "block");
  // "bad.com:70000": policy line 2, the port starts at policy column 9.
  const port = find(WF, "bad.com:70000");
  assert.deepEqual(mapPolicyPosition(p, 2, 9), { line: port.line, column: port.column + 8 });
  assert.deepEqual(mapPolicyPosition(p, 2, 9), { line: 13, column: 21 }); // by hand: 12 spaces + 9
});

Deno.test("workflow: |- with comment and blank line, |+ keep, indentation indicator", () => {
  const policies = workflow(WF);
  const strip = find(WF, "x.com:0");
  assert.deepEqual(mapPolicyPosition(policies[1], 3, 7), { line: strip.line, column: strip.column + 6 });
  const keep = find(WF, "keep.com:99999");
  assert.deepEqual(mapPolicyPosition(policies[2], 1, 10), { line: keep.line, column: keep.column + 9 });
  // |4: content indentation is 14 and the policy line keeps 2 more spaces (column 3 = "i").
  const indented = find(WF, "indented.com:70000");
  assert.equal(policies[3].placement.style, "block");
  assert.deepEqual(mapPolicyPosition(policies[3], 1, 18), {
    line: indented.line,
    column: indented.column + 15,
  });
});

Deno.test("workflow: quoted and plain scalars give the scalar start and the policy line", () => {
  const policies = workflow(WF);
  const quoted = find(WF, '"quoted.com');
  assert.deepEqual(policies[4].placement, { style: "scalar", line: quoted.line, column: quoted.column });
  assert.deepEqual(mapPolicyPosition(policies[4], 2, 12), {
    line: quoted.line,
    column: quoted.column,
    policyLine: 2,
  });
  const plain = find(WF, "plain.com:70000");
  assert.deepEqual(mapPolicyPosition(policies[5], 1, 11), {
    line: plain.line,
    column: plain.column,
    policyLine: 1,
  });
});

Deno.test("workflow: folded > is not a literal block: scalar start", () => {
  const src =
    "jobs:\n  j:\n    steps:\n      - uses: a/egress@v1\n        with:\n          policy: >\n            a.com\n\n            b.com\n";
  const [p] = workflow(src);
  assert.equal(p.placement.style, "scalar");
  assert.deepEqual(mapPolicyPosition(p, 2, 1), { line: 6, column: 19, policyLine: 2 });
});

Deno.test("workflow: CRLF files, and TABs inside block content count as one column", () => {
  const src =
    "jobs:\r\n  j:\r\n    steps:\r\n      - uses: a/egress\r\n        with:\r\n          policy: |\r\n            a.com\r\n            b.com\tx\r\n";
  const [p] = workflow(src);
  assert.equal(p.text, "a.com\nb.com\tx\n");
  assert.deepEqual(mapPolicyPosition(p, 2, 7), { line: 8, column: 19 });
});

Deno.test("workflow: a policy line ending in a char YAML does not break on still maps right", () => {
  // \u2028 ends a policy line (policy.md §1) but is content for YAML.
  const src =
    "jobs:\n  j:\n    steps:\n      - uses: a/egress\n        with:\n          policy: |\n            a.com\u2028b.com:0\n            c.com:0\n";
  const [p] = workflow(src);
  assert.deepEqual(mapPolicyPosition(p, 2, 7), { line: 7, column: 13 + 6 + 6 });
  assert.deepEqual(mapPolicyPosition(p, 3, 7), { line: 8, column: 19 });
});

Deno.test("workflow: not a workflow, invalid YAML, non-string policy", () => {
  assert.equal(inspectWorkflow("github.com\n").kind, "not-workflow");
  assert.equal(inspectWorkflow("name: x\non: push\n").kind, "not-workflow");
  assert.equal(inspectWorkflow("jobs: [a]\n").kind, "not-workflow");
  const bad = inspectWorkflow("jobs:\n  a: [\n");
  assert.equal(bad.kind, "invalid-yaml");
  if (bad.kind === "invalid-yaml") assert.ok(bad.error.line >= 2 && !bad.error.message.includes("\n"));
  const dup = inspectWorkflow("jobs: {}\njobs: {}\n");
  assert.equal(dup.kind, "invalid-yaml");
  const r = inspectWorkflow(
    "jobs:\n  j:\n    steps:\n      - uses: a/egress\n        with:\n          policy: [a]\n",
  );
  assert.equal(r.kind, "workflow");
  if (r.kind === "workflow") {
    assert.equal(r.policies.length, 0);
    assert.deepEqual(r.problems, [{
      label: "jobs.j.steps[0] (step 0)",
      line: 6,
      column: 19,
      message: "with.policy must be a string",
    }]);
  }
});

Deno.test("workflow: uses matching", () => {
  assert.ok(usesEgress("org/egress@v1"));
  assert.ok(usesEgress("ORG/EGRESS"));
  assert.ok(usesEgress("./.github/actions/egress"));
  assert.ok(!usesEgress("org/egress-tools@v1"));
  assert.ok(!usesEgress("org/egress/sub@v1"));
  assert.ok(!usesEgress("org/x@egress"));
  assert.ok(usesEgress("me/fw@v1", "me/FW"));
  assert.ok(!usesEgress("me/fw2@v1", "me/fw"));
});
