// The repository stays linted and formatted: `deno task lint` and `deno fmt --check` must pass, so a
// change that skips them fails here (and in CI) instead of piling up.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../..", import.meta.url));

async function deno(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: repo,
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, text: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

Deno.test("repository: deno lint finds nothing", async () => {
  const result = await deno(["lint"]);
  assert.equal(result.code, 0, result.text.slice(-4000));
});

Deno.test("repository: deno fmt --check finds nothing to format", async () => {
  const result = await deno(["fmt", "--check"]);
  assert.equal(result.code, 0, result.text.slice(-4000));
});
