// Minimal stand-in for Deno.test on Node's test runner, injected into the policy test bundles so the
// same test files run under Node against the npm build. Only what the policy tests use is provided;
// a test that reaches for another Deno API fails loudly under Node, which is the point.
import { test as nodeTest } from "node:test";

function normalize(a, b, c) {
  if (typeof a === "function") return { name: a.name || "anonymous", fn: a };
  if (typeof a === "object") return { ...a, ...(typeof b === "function" ? { fn: b } : {}) };
  if (typeof b === "function") return { name: a, fn: b };
  return { ...b, name: a, fn: c };
}

function wrapContext(t) {
  return {
    name: t.name,
    step(a, b) {
      const def = normalize(a, b);
      return t.test(def.name, { skip: def.ignore === true }, (inner) => def.fn(wrapContext(inner)));
    },
  };
}

export const Deno = {
  test(a, b, c) {
    const def = normalize(a, b, c);
    nodeTest(def.name, { skip: def.ignore === true, only: def.only === true }, (t) => def.fn(wrapContext(t)));
  },
};
