import assert from "node:assert/strict";
import { createRequestHooks } from "../../src/packages/request_hooks.ts";
import { DEFAULT_PACKAGE_CHECK_URL, PackageChecker } from "../../src/packages/reputation.ts";

const settings = (env: Record<string, string>, packageCheck = false, packageCheckUrl?: string) => ({
  packageCheck,
  packageCheckUrl,
  version: "1.2.3",
  env: (key: string) => env[key],
  log: { warn() {} },
});

Deno.test("request hooks: nothing configured ⇒ no hook at all", () => {
  assert.deepEqual(createRequestHooks(settings({})), {});
  // An OIDC URL without its token (or the reverse) tags nothing.
  assert.deepEqual(createRequestHooks(settings({ ACTIONS_ID_TOKEN_REQUEST_URL: "https://x/" })), {});
  assert.deepEqual(createRequestHooks(settings({ EGRESS_GITHUB_TOKEN: "" })), {});
});

Deno.test("request hooks: --package-check-url, else EGRESS_PACKAGE_CHECK_URL, else the public service", () => {
  const env = { EGRESS_PACKAGE_CHECK_URL: "http://127.0.0.1:9/" };
  const fromFlag = createRequestHooks(settings(env, true, "http://127.0.0.1:8"));
  assert.ok(fromFlag.packageCheck instanceof PackageChecker);
  assert.equal((fromFlag.packageCheck as PackageChecker).baseUrl, "http://127.0.0.1:8");
  const fromEnv = createRequestHooks(settings(env, true));
  assert.equal((fromEnv.packageCheck as PackageChecker).baseUrl, "http://127.0.0.1:9");
  const byDefault = createRequestHooks(settings({}, true));
  assert.equal((byDefault.packageCheck as PackageChecker).baseUrl, DEFAULT_PACKAGE_CHECK_URL);
  // The URL alone does not turn the check on.
  assert.equal(createRequestHooks(settings(env, false)).packageCheck, undefined);
  assert.throws(
    () => createRequestHooks(settings({ EGRESS_PACKAGE_CHECK_URL: "ftp://x" }, true)),
    /Cannot use EGRESS_PACKAGE_CHECK_URL "ftp:\/\/x": scheme must be http or https/,
  );
});

Deno.test("request hooks: the job token and the OIDC token from the environment", () => {
  const hooks = createRequestHooks(settings({
    EGRESS_GITHUB_TOKEN: "ghs_abc",
    ACTIONS_ID_TOKEN_REQUEST_URL: "https://oidc.example/idtoken?api-version=2.0",
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: "req-token",
  }));
  const tag = hooks.tagToken!;
  assert.equal(tag("https://api.github.com/repos/o/r", [["authorization", "token ghs_abc"]]), true);
  assert.equal(tag("https://api.github.com/repos/o/r", [["authorization", "token ghs_other"]]), false);
  assert.equal(
    tag("https://oidc.example/idtoken?api-version=2.0&audience=x", [["authorization", "Bearer req-token"]]),
    true,
  );
  assert.equal(hooks.packageCheck, undefined);
});
