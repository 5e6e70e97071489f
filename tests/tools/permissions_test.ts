import assert from "node:assert/strict";
import { computePermissions, formatPermissions, formatUnknown } from "../../src/tools/permissions.ts";

const API = "https://api.github.com/repos/octo/app";
const tagged = (method: string | undefined, url: string) => ({
  url,
  ...(method ? { method } : {}),
  github_token: true,
});

/** The permissions one tagged request needs. */
function needs(method: string | undefined, url: string) {
  return computePermissions([tagged(method, url)]);
}

// cli.md §permissions rules 5 and 6, one row per table entry: [method, path below the repo, expected].
const ROWS: Array<[string, string, Record<string, string>]> = [
  // contents (explicit)
  ["GET", "codeowners/errors", { contents: "read" }],
  ["GET", "branches", { contents: "read" }],
  ["PUT", "pulls/7/merge", { contents: "write" }],
  ["PUT", "pulls/7/update-branch", { contents: "write" }],
  ["POST", "comments/55/reactions", { contents: "write" }],
  ["POST", "merge-upstream", { contents: "write" }],
  ["POST", "merges", { contents: "write" }],
  ["POST", "dispatches", { contents: "write" }],
  ["DELETE", "comments/55/reactions/9", { contents: "write" }],
  ["PATCH", "comments/55", { contents: "write" }],
  ["DELETE", "comments/55", { contents: "write" }],
  // issue-or-PR, no known PR: both
  ["GET", "issues/3", { issues: "read", "pull-requests": "read" }],
  ["PATCH", "issues/3", { issues: "write", "pull-requests": "write" }],
  ["POST", "issues/3/assignees", { issues: "write", "pull-requests": "write" }],
  ["POST", "issues/3/comments", { issues: "write", "pull-requests": "write" }],
  ["GET", "issues/3/events", { issues: "read", "pull-requests": "read" }],
  ["GET", "issues/3/timeline", { issues: "read", "pull-requests": "read" }],
  ["PUT", "issues/3/lock", { issues: "write", "pull-requests": "write" }],
  ["POST", "issues/3/labels", { issues: "write", "pull-requests": "write" }],
  ["DELETE", "issues/3/labels/bug", { issues: "write", "pull-requests": "write" }],
  ["POST", "issues/3/reactions", { issues: "write", "pull-requests": "write" }],
  ["DELETE", "issues/3/reactions/1", { issues: "write", "pull-requests": "write" }],
  ["PATCH", "issues/comments/99", { issues: "write", "pull-requests": "write" }],
  ["GET", "issues/comments/99/reactions", { issues: "read", "pull-requests": "read" }],
  ["GET", "issues/events/12", { issues: "read", "pull-requests": "read" }],
  // both read
  ["GET", "issues/comments", { issues: "read", "pull-requests": "read" }],
  ["GET", "issues/events", { issues: "read", "pull-requests": "read" }],
  ["GET", "assignees", { issues: "read", "pull-requests": "read" }],
  ["GET", "issues", { issues: "read", "pull-requests": "read" }],
  // issues
  ["POST", "issues", { issues: "write" }],
  ["GET", "labels", { issues: "read" }],
  ["POST", "labels", { issues: "write" }],
  ["PATCH", "labels/bug", { issues: "write" }],
  ["GET", "milestones", { issues: "read" }],
  ["PATCH", "milestones/2", { issues: "write" }],
  ["GET", "milestones/2/labels", { issues: "read" }],
  // rule 6, by first segment
  ["GET", "actions/runs", { actions: "read" }],
  ["POST", "actions/runs/5/rerun", { actions: "write" }],
  ["POST", "check-runs", { checks: "write" }],
  ["GET", "check-suites/4", { checks: "read" }],
  ["GET", "pulls", { "pull-requests": "read" }],
  ["GET", "pulls/7/merge", { "pull-requests": "read" }],
  ["POST", "pulls/7/reviews", { "pull-requests": "write" }],
  ["POST", "releases", { contents: "write" }],
  ["GET", "git/ref/heads/main", { contents: "read" }],
  ["GET", "commits/abc", { contents: "read" }],
  ["GET", "compare/a...b", { contents: "read" }],
  ["PUT", "contents/README.md", { contents: "write" }],
  ["POST", "deployments", { deployments: "write" }],
  ["GET", "environments", { deployments: "read" }],
  ["GET", "pages", { pages: "read" }],
  ["POST", "code-scanning/sarifs", { "security-events": "write" }],
  ["GET", "secret-scanning/alerts", { "security-events": "read" }],
  ["GET", "dependabot/alerts", { "security-events": "read" }],
  ["POST", "statuses/abc", { statuses: "write" }],
  ["GET", "projects", { projects: "read" }],
  ["GET", "packages", { packages: "read" }],
  // HEAD counts as GET; the table's method restrictions fall through to rule 6
  ["HEAD", "contents/x", { contents: "read" }],
];

for (const [method, path, expected] of ROWS) {
  Deno.test(`permissions: ${method} ${path}`, () => {
    assert.deepEqual(needs(method, `${API}/${path}`).permissions, expected);
  });
}

Deno.test("permissions: method absent ⇒ GET; extra slashes and the query ignored; /repositories/<id>", () => {
  assert.deepEqual(needs(undefined, `${API}/contents/x`).permissions, { contents: "read" });
  assert.deepEqual(needs("GET", "https://api.github.com//repos//octo/app///pulls?state=open").permissions, {
    "pull-requests": "read",
  });
  assert.deepEqual(needs("POST", "https://api.github.com/repositories/123456/statuses/abc").permissions, {
    statuses: "write",
  });
});

Deno.test("permissions: the bare repository path needs nothing; other paths are unknown", () => {
  const bare = computePermissions([tagged("GET", API), tagged("GET", `${API}/`)]);
  assert.deepEqual(bare.permissions, {});
  assert.deepEqual(bare.unknown, []);
  const other = computePermissions([
    tagged("GET", "https://api.github.com/user"),
    tagged("POST", "https://api.github.com/graphql"),
    tagged("POST", "https://api.github.com/graphql"),
    tagged("GET", `${API}/traffic/views`),
    tagged("POST", `${API}/branches`),
    tagged("PATCH", `${API}/issues`),
  ]);
  assert.deepEqual(other.permissions, {});
  assert.deepEqual(other.unknown, [
    { method: "POST", path: "/graphql" },
    { method: "POST", path: "/repos/octo/app/branches" },
    { method: "PATCH", path: "/repos/octo/app/issues" },
    { method: "GET", path: "/repos/octo/app/traffic/views" },
    { method: "GET", path: "/user" },
  ]);
  assert.equal(
    formatUnknown(other),
    "# unknown: POST /graphql\n# unknown: POST /repos/octo/app/branches\n# unknown: PATCH /repos/octo/app/issues\n" +
      "# unknown: GET /repos/octo/app/traffic/views\n# unknown: GET /user\n",
  );
});

Deno.test("permissions: OIDC and uploads hosts; other hosts ignored; untagged lines ignored", () => {
  const result = computePermissions([
    tagged("GET", "https://pipelinesghubeus2.actions.githubusercontent.com/abc/_apis/oidctoken?audience=x"),
    tagged("GET", "https://uploads.github.com/repos/octo/app/releases/1/assets"),
    tagged("GET", "https://github.com/octo/app.git/info/refs"),
    tagged("GET", "https://actions.githubusercontent.com.evil.com/x"),
    { url: `${API}/actions/runs`, method: "POST" },
  ]);
  assert.deepEqual(result.permissions, { contents: "read", "id-token": "write" });
  assert.equal(result.tagged, 4);
  assert.deepEqual(needs("POST", "https://uploads.github.com/repos/octo/app/releases/1/assets").permissions, {
    contents: "write",
  });
});

Deno.test("permissions: numbers seen as /pulls/<n> in the same repository are pull requests", () => {
  const result = computePermissions([
    tagged("GET", `${API}/pulls/7`),
    tagged("POST", `${API}/issues/7/comments`),
    tagged("POST", "https://api.github.com/repos/octo/other/issues/7/comments"),
    tagged("GET", `${API}/issues/12/labels`),
  ]);
  assert.deepEqual(result.permissions, { issues: "write", "pull-requests": "write" });
  assert.deepEqual(result.notes, [
    "note: octo/app: #12 may be issues or pull requests: granted both issues and pull-requests",
    "note: octo/other: #7 may be issues or pull requests: granted both issues and pull-requests",
  ]);
  const onlyPr = computePermissions([
    tagged("POST", `${API}/issues/7/comments`),
    // The proof may come later in the log, and from a line without the token.
    { url: "https://api.github.com/repos/Octo/App/pulls/7/files", method: "GET" },
  ]);
  assert.deepEqual(onlyPr.permissions, { "pull-requests": "write" });
  assert.deepEqual(onlyPr.notes, []);
});

Deno.test("permissions: an ambiguous request without a number grants both with a note", () => {
  const result = computePermissions([
    tagged("PATCH", `${API}/issues/comments/99`),
    tagged("GET", `${API}/issues/2`),
    tagged("GET", `${API}/issues/10`),
  ]);
  assert.deepEqual(result.permissions, { issues: "write", "pull-requests": "write" });
  assert.deepEqual(result.notes, [
    "note: octo/app: #2, #10, comment/event ids may be issues or pull requests: granted both issues and pull-requests",
  ]);
});

Deno.test("permissions: write beats read; output sorted with notes last", () => {
  const result = computePermissions([
    tagged("GET", `${API}/contents/a`),
    tagged("PUT", `${API}/contents/a`),
    tagged("GET", `${API}/contents/b`),
    tagged("GET", `${API}/actions/runs`),
    tagged("GET", `${API}/issues/4`),
  ]);
  assert.equal(
    formatPermissions(result),
    "permissions:\n  actions: read\n  contents: write\n  issues: read\n  pull-requests: read\n" +
      "# note: octo/app: #4 may be issues or pull requests: granted both issues and pull-requests\n",
  );
  assert.equal(formatPermissions(computePermissions([])), "permissions: {}\n");
});
