// The action's inputs (runner.md §1).

import process from "node:process";
import { getInput, InputError, parseBooleanInput } from "./actions.ts";
import type { UploadSetting } from "../../src/runner/summary.ts";

export type Inputs = {
  policy: string;
  audit: boolean;
  allowSudo: boolean;
  socketSecurity: boolean;
  githubToken: string;
  containerCerts: boolean;
  uploadLog: UploadSetting;
  failOnDeny: boolean;
};

export function readInputs(env: NodeJS.ProcessEnv = process.env): Inputs {
  const uploadText = getInput("upload-log", env).toLowerCase() || "auto";
  if (uploadText !== "true" && uploadText !== "false" && uploadText !== "auto") {
    throw new InputError("input upload-log must be true, false or auto");
  }
  return {
    // GitHub trims the ends of inputs already; the text is used as given.
    policy: env["INPUT_POLICY"] ?? "",
    audit: parseBooleanInput("audit", getInput("audit", env), false),
    allowSudo: parseBooleanInput("allow-sudo", getInput("allow-sudo", env), false),
    socketSecurity: parseBooleanInput("socket-security", getInput("socket-security", env), false),
    githubToken: getInput("github-token", env),
    containerCerts: parseBooleanInput("container-certs", getInput("container-certs", env), true),
    uploadLog: uploadText,
    failOnDeny: parseBooleanInput("fail-on-deny", getInput("fail-on-deny", env), true),
  };
}

/** runner.md §2 pre step 1: the only supported runner. */
export function checkRunner(env: NodeJS.ProcessEnv = process.env): void {
  const expected: Array<[string, string]> = [
    ["RUNNER_OS", "Linux"],
    ["RUNNER_ARCH", "X64"],
    ["RUNNER_ENVIRONMENT", "github-hosted"],
    ["ImageOS", "ubuntu24"],
  ];
  for (const [name, value] of expected) {
    if (env[name] !== value) {
      throw new InputError(
        `egress supports GitHub-hosted Ubuntu 24.04 x64 runners only: ${name} is ${
          JSON.stringify(env[name] ?? "")
        }, expected ${JSON.stringify(value)}`,
      );
    }
  }
}
