// `egress stop [--control-socket PATH] [--timeout S]`: sends `shutdown` and waits until the daemon
// has removed its control socket (its last cleanup step). 0 stopped; 1 refused or timed out;
// 2 no socket.

import { CliError, parseArgs, UsageError } from "./args.ts";
import { ControlUnreachable, sendControlCommand } from "../control/client.ts";

export const STOP_USAGE = `Usage: egress stop [--control-socket PATH] [--timeout SECONDS]

Asks the egress daemon to shut down and waits until it has cleaned up (default 10 s).
Exit: 0 stopped, 1 refused or timed out, 2 no control socket.`;

const FLAGS = {
  help: { kind: "boolean", short: "h" },
  "control-socket": { kind: "string" },
  timeout: { kind: "string" },
} as const;

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

export async function runStop(args: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(args, FLAGS);
  if (flags.help) {
    console.log(STOP_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const path = flags["control-socket"] ?? "/run/egress.sock";
  const timeoutText = flags.timeout ?? "10";
  if (!/^\d+(\.\d+)?$/.test(timeoutText) || Number(timeoutText) <= 0) {
    throw new UsageError(
      `--timeout must be a positive number of seconds, got ${JSON.stringify(timeoutText)}`,
    );
  }
  const deadline = Date.now() + Number(timeoutText) * 1000;
  if (!exists(path)) throw new CliError(`no control socket at ${path} (is the daemon running?)`, 2);
  let reply;
  try {
    reply = await sendControlCommand(path, "shutdown", Math.min(5000, Number(timeoutText) * 1000));
  } catch (error) {
    if (error instanceof ControlUnreachable && error.missing) throw new CliError(error.message, 2);
    throw new CliError((error as Error).message, 1);
  }
  if (!reply.ok) throw new CliError(`the daemon refused: ${reply.text}`, 1);
  while (exists(path)) {
    if (Date.now() > deadline) {
      throw new CliError(`the daemon did not finish shutting down within ${timeoutText} s`, 1);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log("egress stopped");
  return 0;
}
