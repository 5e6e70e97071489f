// Entry point of the action's `pre` step (bundled to action/dist/pre.cjs).
import process from "node:process";
import { annotation, emit, InputError } from "./lib/actions.ts";
import { runPre, StepFailure } from "./lib/pre_run.ts";

runPre().then(
  () => process.exit(0),
  (error) => {
    const known = error instanceof StepFailure || error instanceof InputError;
    emit(
      annotation("error", known ? error.message : `egress pre failed: ${(error as Error).stack ?? error}`),
    );
    process.exit(1);
  },
);
