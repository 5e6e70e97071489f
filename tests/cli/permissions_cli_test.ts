import assert from "node:assert/strict";
import { runCli, tempFiles } from "./run_cli.ts";

const line = (fields: Record<string, unknown>) =>
  JSON.stringify({
    ts: "2026-02-18T10:30:45.123Z",
    type: "https",
    dst_ip: "140.82.112.5",
    dst_port: 443,
    src_port: 40001,
    policy: "allow",
    ...fields,
  });

Deno.test("egress permissions: the block on stdout, unknown requests on stderr", async () => {
  const log = [
    line({
      url: "https://api.github.com/repos/octo/app/contents/README.md",
      method: "PUT",
      github_token: true,
    }),
    line({ url: "https://api.github.com/repos/octo/app/pulls/3", method: "GET", github_token: true }),
    line({
      url: "https://api.github.com/repos/octo/app/issues/3/comments",
      method: "POST",
      github_token: true,
    }),
    line({
      url: "https://api.github.com/repos/octo/app/issues/8/labels",
      method: "POST",
      github_token: true,
    }),
    line({ url: "https://api.github.com/graphql", method: "POST", github_token: true }),
    line({ url: "https://api.github.com/repos/octo/app/actions/runs", method: "POST" }),
  ].join("\n") + "\n";
  const { dir, cleanup } = await tempFiles({ "log.jsonl": log });
  try {
    const result = await runCli(["permissions", `${dir}/log.jsonl`]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      "permissions:\n  contents: write\n  issues: write\n  pull-requests: write\n" +
        "# note: octo/app: #8 may be issues or pull requests: granted both issues and pull-requests\n",
    );
    assert.equal(result.stderr, "# unknown: POST /graphql\n");
    const json = await runCli(["permissions", `${dir}/log.jsonl`, "--json"]);
    assert.equal(json.code, 0);
    assert.deepEqual(JSON.parse(json.stdout), {
      permissions: { contents: "write", issues: "write", "pull-requests": "write" },
      notes: ["note: octo/app: #8 may be issues or pull requests: granted both issues and pull-requests"],
      unknown: [{ method: "POST", path: "/graphql" }],
      tagged: 5,
    });
  } finally {
    await cleanup();
  }
});

Deno.test("egress permissions: no tagged line explains why; exit 0", async () => {
  const result = await runCli(["permissions", "-"], {
    stdin: line({ url: "https://api.github.com/user", method: "GET" }) + "\n",
  });
  assert.equal(result.code, 0);
  assert.match(result.stdout, /No request in this log carried the job's GitHub token/);
  assert.doesNotMatch(result.stdout, /^permissions:/m);
});

Deno.test("egress permissions: a missing file exits 2, a missing argument too", async () => {
  const missing = await runCli(["permissions", "/nonexistent/x.jsonl"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Cannot read log \/nonexistent\/x\.jsonl: no such file/);
  const none = await runCli(["permissions"]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /LOG is required/);
});
