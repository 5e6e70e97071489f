// Entry point of the action's `main` step (bundled to action/dist/main.cjs): one line of what runs.
import process from "node:process";
import { emit } from "./lib/actions.ts";
import { actionPaths } from "./lib/config.ts";
import { readInputs } from "./lib/inputs.ts";
import { validatePolicy } from "./lib/policy_library.ts";

try {
  const inputs = readInputs();
  const rules =
    validatePolicy(inputs.policy, { runner: true, repository: process.env.GITHUB_REPOSITORY || undefined })
      .rules;
  const builtIn = rules.filter((rule) => rule.line === 0).length;
  emit(
    `egress: ${
      inputs.audit ? "audit" : "enforce"
    }, ${rules.length} rules (${builtIn} built-in), log ${actionPaths().logFile}`,
  );
} catch (error) {
  emit(`egress: ${(error as Error).message}`);
}
