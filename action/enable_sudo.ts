// Entry point of the enable-sudo sub-action (bundled to action/dist/enable-sudo.cjs).
import process from "node:process";
import { runControlCommand } from "./lib/sub_action.ts";

runControlCommand("enable-sudo").then((code) => process.exit(code));
