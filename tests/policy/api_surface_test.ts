// The public API of mod.ts against policy.md §13: the exported names at run time here, the exact
// types in api_types_check.ts (imported so that `deno test` type-checks it).
import assert from "node:assert/strict";
import * as lib from "../../mod.ts";
import "./api_types_check.ts";

Deno.test("§13: mod.ts exports exactly the Library API names", () => {
  assert.deepEqual(Object.keys(lib).sort(), [
    "DnsCache",
    "Enforcer",
    "Policy",
    "PolicyError",
    "parsePolicy",
    "validatePolicy",
  ]);
  for (const name of ["DnsCache", "Enforcer", "Policy", "PolicyError", "parsePolicy", "validatePolicy"]) {
    assert.equal(typeof (lib as Record<string, unknown>)[name], "function", name);
  }
  assert.ok(new lib.PolicyError([]) instanceof Error);
});
