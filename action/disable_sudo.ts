// Entry point of the disable-sudo sub-action (bundled to action/dist/disable-sudo.cjs).
import process from "node:process";
import { runControlCommand } from "./lib/sub_action.ts";

runControlCommand("disable-sudo").then((code) => process.exit(code));
