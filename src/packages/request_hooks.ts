// The proxy's request hooks (extras.md) built from the daemon's flags and environment: the package
// reputation check (`--package-check`, `--package-check-url`, `EGRESS_PACKAGE_CHECK_URL`) and token
// tagging (`EGRESS_GITHUB_TOKEN`, `ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`). No Deno API: the daemon
// passes its environment reader, so tests build hooks without touching the process environment.

import type { RequestHooks } from "../proxy/context.ts";
import {
  PACKAGE_CHECK_ENV,
  packageCheckBaseUrl,
  PackageChecker,
  type PackageCheckLog,
} from "./reputation.ts";
import { createTokenTagger } from "./token_tagging.ts";

export const GITHUB_TOKEN_ENV = "EGRESS_GITHUB_TOKEN";

export type RequestHookSettings = {
  /** `--package-check` (action input `socket-security`) */
  packageCheck: boolean;
  /** `--package-check-url`; else `EGRESS_PACKAGE_CHECK_URL`; else the public service */
  packageCheckUrl?: string;
  /** egress version, for the `User-Agent` sent to the reputation service */
  version: string;
  env: (key: string) => string | undefined;
  /** the operational log: package check failures and rate limiting */
  log: PackageCheckLog;
  /** tests: a shorter lookup timeout than the spec's 2 s */
  timeoutMs?: number;
};

/**
 * Hooks for `startProxy({ requestHooks })`. Tagging is on whenever a token is configured (it only
 * adds a log field); the package check only with `packageCheck`.
 * @throws Error `Cannot use --package-check-url …` (or the variable) for a base URL that is not http(s).
 */
export function createRequestHooks(settings: RequestHookSettings): RequestHooks {
  const hooks: RequestHooks = {};
  if (settings.packageCheck) {
    hooks.packageCheck = new PackageChecker({
      baseUrl: packageCheckBaseUrl(settings.packageCheckUrl, settings.env(PACKAGE_CHECK_ENV)),
      version: settings.version,
      log: settings.log,
      ...(settings.timeoutMs !== undefined ? { timeoutMs: settings.timeoutMs } : {}),
    });
  }
  const githubToken = settings.env(GITHUB_TOKEN_ENV);
  const idTokenRequestUrl = settings.env("ACTIONS_ID_TOKEN_REQUEST_URL");
  const idTokenRequestToken = settings.env("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
  if (githubToken || (idTokenRequestUrl && idTokenRequestToken)) {
    hooks.tagToken = createTokenTagger({ githubToken, idTokenRequestUrl, idTokenRequestToken });
  }
  return hooks;
}
