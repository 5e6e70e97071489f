import assert from "node:assert/strict";
import { checkRepositoryFlag, parseGitHubRemote, resolveRepository } from "../../src/cli/repository.ts";
import { UsageError } from "../../src/cli/args.ts";

Deno.test("repository: github.com remotes in HTTPS and SSH forms, .git optional", () => {
  assert.equal(parseGitHubRemote("https://github.com/octo/hello-world.git"), "octo/hello-world");
  assert.equal(parseGitHubRemote("https://github.com/octo/hello.world"), "octo/hello.world");
  assert.equal(parseGitHubRemote("https://x-access-token@github.com/octo/r.git\n"), "octo/r");
  assert.equal(parseGitHubRemote("git@github.com:octo/r.git"), "octo/r");
  assert.equal(parseGitHubRemote("git@github.com:octo/r"), "octo/r");
  assert.equal(parseGitHubRemote("ssh://git@github.com/octo/r.git"), "octo/r");
  assert.equal(parseGitHubRemote("ssh://git@github.com:22/octo/r"), "octo/r");
  assert.equal(parseGitHubRemote("https://gitlab.com/octo/r.git"), undefined);
  assert.equal(parseGitHubRemote("https://github.com.evil.example/octo/r"), undefined);
  assert.equal(parseGitHubRemote("https://github.com/octo"), undefined);
  assert.equal(parseGitHubRemote("/srv/git/r.git"), undefined);
});

Deno.test("repository: --repo is checked, and wins without running git", async () => {
  assert.equal(checkRepositoryFlag("a-b/c.d_e"), "a-b/c.d_e");
  assert.throws(() => checkRepositoryFlag("a/b/c"), UsageError);
  assert.throws(() => checkRepositoryFlag("a_b/c"), UsageError);
  assert.deepEqual(await resolveRepository("o/r", "/nonexistent-dir"), { repository: "o/r", source: "flag" });
});

Deno.test("repository: git origin of a checkout, else the stand-in with a warning", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-cli-repo-" });
  try {
    const none = await resolveRepository(undefined, dir);
    assert.equal(none.repository, "owner/repo");
    assert.equal(none.source, "stand-in");
    assert.match(none.warning ?? "", /--repo OWNER\/REPO/);
    const git = (args: string[]) =>
      new Deno.Command("git", { args, cwd: dir, stdout: "null", stderr: "null" }).output();
    const init = await git(["init", "-q"]);
    if (!init.success) throw new Error("git init failed");
    await git(["remote", "add", "origin", "git@github.com:octo/from-git.git"]);
    assert.deepEqual(await resolveRepository(undefined, dir), { repository: "octo/from-git", source: "git" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
