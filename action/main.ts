// Entry point of the action's `main` step (bundled to action/dist/main.cjs): one line of what runs,
// and the control token as the step output `control-token` for the disable-sudo / enable-sudo
// sub-actions (separate actions, which GitHub does not give this action's state). The output
// reaches only the steps whose `with:` names it; the token was masked in pre.
import process from "node:process";
import { annotation, emit, getState, setOutput } from "./lib/actions.ts";
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
const token = getState("control_token");
if (token) {
  try {
    setOutput("control-token", token);
  } catch (error) {
    emit(annotation("warning", `${(error as Error).message}: the sub-actions will have no token`));
  }
}
