// disable-sudo / enable-sudo sub-actions (runner.md §1, §5): one control command each.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { annotation, emit } from "./actions.ts";
import { actionPaths } from "./config.ts";
import { sendCommand } from "./control.ts";

export async function runControlCommand(
  command: "disable-sudo" | "enable-sudo",
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const paths = actionPaths(env);
  let token = "";
  try {
    token = readFileSync(join(paths.workDir, "control-token"), "utf8").trim();
  } catch {
    emit(annotation("error", `Cannot ${command}: the egress action's pre step has not run in this job`));
    return 1;
  }
  try {
    const reply = await sendCommand(paths.controlSocket, command, token);
    if (reply.ok) {
      emit(`✓ ${reply.text}`);
      return 0;
    }
    emit(annotation("error", `error: ${reply.text}`));
  } catch (error) {
    emit(annotation("error", (error as Error).message));
  }
  return 1;
}
