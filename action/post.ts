// Entry point of the action's `post` step (bundled to action/dist/post.cjs).
import process from "node:process";
import { annotation, emit } from "./lib/actions.ts";
import { actionsArtifactUploader } from "./lib/artifact.ts";
import { runPost } from "./lib/post_run.ts";

runPost({ uploader: actionsArtifactUploader() }).then(
  (outcome) => {
    for (const failure of outcome.failures) emit(annotation("error", failure));
    process.exit(outcome.failures.length > 0 ? 1 : 0);
  },
  (error) => {
    emit(annotation("error", `egress post failed: ${(error as Error).stack ?? error}`));
    process.exit(1);
  },
);
