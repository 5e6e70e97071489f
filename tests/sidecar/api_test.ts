// The HTTP API behaviour (sidecar.md §5) against an in-memory sidecar: every status code, and a
// rejected request changes nothing. The real-kernel test repeats the main cases over HTTP.
import assert from "node:assert/strict";
import { type ApiContext, handleApiRequest, MAX_BODY_BYTES, tokenMatches } from "../../src/sidecar/api.ts";
import type { SidecarPolicy } from "../../src/sidecar/policy.ts";

function fakeSidecar(failApply = false) {
  const state = { policy: { defaultAction: "deny", egress: [] } as SidecarPolicy, applied: 0 };
  const target = {
    get policy() {
      return state.policy;
    },
    healthy: true,
    setPolicy(policy: SidecarPolicy) {
      if (failApply) return Promise.reject(new Error("nft said no"));
      state.policy = policy;
      state.applied++;
      return Promise.resolve();
    },
    status: () => Promise.resolve({ mode: "sidecar" }),
  };
  return { state, target };
}

const TOKEN = "s3cret-token";

async function call(
  context: ApiContext,
  method: string,
  path: string,
  options: { body?: string; type?: string; token?: string | null } = {},
) {
  const headers = new Headers();
  const token = options.token === undefined ? TOKEN : options.token;
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  if (options.type) headers.set("content-type", options.type);
  const response = await handleApiRequest(
    new Request(`http://127.0.0.1:18080${path}`, {
      method,
      headers,
      // bytes, so that Request adds no content-type of its own
      body: options.body === undefined ? undefined : new TextEncoder().encode(options.body),
    }),
    context,
  );
  const text = await response.text();
  return { status: response.status, text, json: () => JSON.parse(text) };
}

Deno.test("api: token compare is exact", async () => {
  assert.equal(await tokenMatches("abc", "abc"), true);
  assert.equal(await tokenMatches("abc", "abd"), false);
  assert.equal(await tokenMatches("ab", "abc"), false);
  assert.equal(await tokenMatches("", "abc"), false);
});

Deno.test("api: 403 without a configured token, 401 with a wrong one, healthz needs none", async () => {
  const { target } = fakeSidecar();
  assert.equal((await call({ target, token: undefined }, "GET", "/policy")).status, 403);
  assert.equal((await call({ target, token: undefined }, "GET", "/status")).status, 403);
  const context = { target, token: TOKEN };
  assert.equal((await call(context, "GET", "/policy", { token: null })).status, 401);
  assert.equal((await call(context, "GET", "/policy", { token: "wrong" })).status, 401);
  assert.equal((await call(context, "GET", "/status", { token: TOKEN + "x" })).status, 401);
  const health = await call({ target, token: undefined }, "GET", "/healthz", { token: null });
  assert.deepEqual([health.status, health.text], [200, "ok\n"]);
  const sick = await call({ target: { ...target, healthy: false }, token: TOKEN }, "GET", "/healthz");
  assert.equal(sick.status, 503);
});

Deno.test("api: POST text and JSON, PATCH, DELETE (body and query), empty POST resets", async () => {
  const { state, target } = fakeSidecar();
  const context = { target, token: TOKEN };
  const posted = await call(context, "POST", "/policy", { type: "text/plain", body: "a.com\nb.com:22\n" });
  assert.equal(posted.status, 200);
  assert.deepEqual(posted.json().egress.map((e: { target: string }) => e.target), ["a.com", "b.com"]);
  const patched = await call(context, "PATCH", "/policy", {
    type: "application/json; charset=utf-8",
    body: '{"egress":[{"action":"deny","target":"b.com"},{"target":"10.0.0.0/8"}]}',
  });
  assert.equal(patched.status, 200);
  assert.deepEqual(patched.json().egress, [
    { action: "allow", target: "a.com", ports: [443], protocol: "tcp" },
    { action: "deny", target: "b.com" },
    { action: "allow", target: "10.0.0.0/8" },
  ]);
  assert.equal(patched.json().defaultAction, "deny");
  const openDefault = await call(context, "PATCH", "/policy", {
    type: "application/json",
    body: '{"defaultAction":"allow","egress":[]}',
  });
  assert.equal(openDefault.status, 200);
  assert.equal(openDefault.json().defaultAction, "allow");
  assert.equal((await call(context, "PATCH", "/policy")).status, 400); // nothing to add
  const withEntry = await call(context, "PATCH", "/policy", { type: "text/plain", body: "c.com" });
  assert.equal(withEntry.json().defaultAction, "allow"); // text PATCH keeps the default
  const deleted = await call(context, "DELETE", "/policy?target=a.com&target=C.com");
  assert.deepEqual(deleted.json().egress.map((e: { target: string }) => e.target), ["b.com", "10.0.0.0/8"]);
  const deletedBody = await call(context, "DELETE", "/policy", {
    type: "application/json",
    body: '{"targets":["b.com"]}',
  });
  assert.deepEqual(deletedBody.json().egress.map((e: { target: string }) => e.target), ["10.0.0.0/8"]);
  assert.equal((await call(context, "DELETE", "/policy")).status, 400);
  const reset = await call(context, "POST", "/policy");
  assert.deepEqual(reset.json(), { defaultAction: "deny", egress: [] });
  assert.deepEqual(state.policy, { defaultAction: "deny", egress: [] });
  const got = await call(context, "GET", "/policy");
  assert.deepEqual(got.json(), { defaultAction: "deny", egress: [] });
});

Deno.test("api: 400 with line/column, 405, 413, 415, 404, 500; a rejected request changes nothing", async () => {
  const { state, target } = fakeSidecar();
  const context = { target, token: TOKEN };
  await call(context, "POST", "/policy", { type: "text/plain", body: "keep.com\n" });
  const before = JSON.stringify(state.policy);
  const applied = state.applied;

  const badText = await call(context, "POST", "/policy", { type: "text/plain", body: "ok.com\nx.com:0\n" });
  assert.equal(badText.status, 400);
  assert.deepEqual(badText.json().errors.map((e: { line: number; column: number }) => [e.line, e.column]), [[
    2,
    7,
  ]]);
  assert.deepEqual(Object.keys(badText.json().errors[0]), ["line", "column", "message", "text"]);
  const badJson = await call(context, "PATCH", "/policy", {
    type: "application/json",
    body: '{"egress":[{"target":"ok.com"},{"target":"not a host"}]}',
  });
  assert.equal(badJson.status, 400);
  assert.deepEqual([badJson.json().errors[0].line, badJson.json().errors[0].column], [2, 0]);
  const cap = await call(context, "POST", "/policy", {
    type: "application/json",
    body: JSON.stringify({
      egress: Array.from({ length: 4097 }, (_, i) => ({ target: `h${i}.example.com` })),
    }),
  });
  assert.equal(cap.status, 400);
  assert.equal(cap.json().errors[0].message, "at most 4096 rules");
  assert.equal((await call(context, "PUT", "/policy", { type: "text/plain", body: "a.com" })).status, 405);
  assert.equal((await call(context, "POST", "/status")).status, 405);
  assert.equal((await call(context, "POST", "/healthz")).status, 405);
  const big = "a.com\n".repeat(Math.ceil((MAX_BODY_BYTES + 10) / 6));
  assert.equal((await call(context, "POST", "/policy", { type: "text/plain", body: big })).status, 413);
  assert.equal((await call(context, "POST", "/policy", { type: "text/html", body: "a.com" })).status, 415);
  assert.equal((await call(context, "POST", "/policy", { body: "a.com" })).status, 415);
  assert.equal((await call(context, "GET", "/nope")).status, 404);
  assert.equal(JSON.stringify(state.policy), before);
  assert.equal(state.applied, applied);

  const failing = fakeSidecar(true);
  const refused = await call({ target: failing.target, token: TOKEN }, "POST", "/policy", {
    type: "text/plain",
    body: "a.com",
  });
  assert.equal(refused.status, 500);
  assert.deepEqual(failing.state.policy, { defaultAction: "deny", egress: [] });
});
