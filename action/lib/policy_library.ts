// The policy library as the action uses it. scripts/build_action.ts resolves this module to the npm
// build of the library (scripts/build_npm.ts, the ESM bundle that runs on Node); Deno type-checks
// it against the sources that bundle is built from.
export { validatePolicy } from "../../src/policy/mod.ts";
export type { PolicyIssue, Rule } from "../../src/policy/mod.ts";
