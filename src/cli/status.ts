// `egress status [--control-socket PATH] [--json]`: exit 0 only when the daemon runs in enforce
// mode; 1 when audit, degraded or unreachable.

import { parseArgs, UsageError } from "./args.ts";
import { sendControlCommand } from "../control/client.ts";
import { parseStatus } from "../control/protocol.ts";

export const STATUS_USAGE = `Usage: egress status [--control-socket PATH] [--json]

Shows the egress daemon's mode, state and counters.
Exit: 0 running in enforce mode, 1 audit mode, degraded or not reachable.`;

const FLAGS = {
  help: { kind: "boolean", short: "h" },
  "control-socket": { kind: "string" },
  json: { kind: "boolean" },
} as const;

export async function runStatus(args: string[]): Promise<number> {
  const { flags, positionals } = parseArgs(args, FLAGS);
  if (flags.help) {
    console.log(STATUS_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const path = flags["control-socket"] ?? "/run/egress.sock";
  let status;
  try {
    const reply = await sendControlCommand(path, "status");
    if (!reply.ok) throw new Error(`the daemon answered: ${reply.text}`);
    status = parseStatus(reply.text);
  } catch (error) {
    if (flags.json) console.log(JSON.stringify({ state: "unreachable", error: (error as Error).message }));
    else console.error(`egress status: ${(error as Error).message}`);
    return 1;
  }
  if (flags.json) {
    console.log(JSON.stringify(status));
  } else {
    const c = status.counters;
    console.log(`mode: ${status.mode}`);
    console.log(`state: ${status.state}`);
    console.log(`rules: ${status.rules}`);
    console.log(`restarts: ${status.restarts}`);
    console.log(`allowed: ${c.allowed}`);
    console.log(`denied: ${c.denied}`);
    console.log(`dns: ${c.dns}`);
    console.log(`errors: ${c.errors}`);
  }
  return status.mode === "enforce" && status.state === "running" ? 0 : 1;
}
