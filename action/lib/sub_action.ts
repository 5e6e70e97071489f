// disable-sudo / enable-sudo sub-actions (runner.md §1, §5): one control command each. The control
// token comes from the input `token`, which the workflow fills from the egress step's output
// (`${{ steps.<id>.outputs.control-token }}`); the daemon also requires this step's trusted action
// context to be egress's own repository.

import process from "node:process";
import { annotation, emit, getInput } from "./actions.ts";
import { actionPaths } from "./config.ts";
import { sendCommand } from "./control.ts";

export async function runControlCommand(
  command: "disable-sudo" | "enable-sudo",
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const paths = actionPaths(env);
  const token = getInput("token", env);
  if (token === "") {
    emit(annotation(
      "error",
      `Cannot ${command}: input token is empty; pass the egress step's output, ` +
        "token: ${{ steps.<egress step id>.outputs.control-token }}",
    ));
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
