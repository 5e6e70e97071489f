// Repository resolution for the {owner}/{repo} placeholders: `--repo`, else the github.com
// `origin` remote of the current git checkout, else the stand-in `owner/repo` with a warning.

import { UsageError } from "./args.ts";

export const STAND_IN_REPOSITORY = "owner/repo";
const GIT_TIMEOUT_MS = 5_000;
const REPOSITORY = /^[A-Za-z0-9-]+\/[A-Za-z0-9._-]+$/;

export type ResolvedRepository = {
  repository: string;
  source: "flag" | "git" | "stand-in";
  warning?: string;
};

/** `owner/repo` from a github.com remote URL (HTTPS or SSH, `.git` optional), else undefined. */
export function parseGitHubRemote(url: string): string | undefined {
  const u = url.trim();
  const patterns = [
    /^https?:\/\/(?:[^@/]+@)?github\.com(?::443)?\/([^/]+)\/([^/]+?)(?:\.git)?\/?$/i,
    /^ssh:\/\/(?:[^@/]+@)?github\.com(?::\d+)?\/([^/]+)\/([^/]+?)(?:\.git)?\/?$/i,
    /^(?:[^@/:]+@)?github\.com:([^/]+)\/([^/]+?)(?:\.git)?\/?$/i,
  ];
  for (const p of patterns) {
    const m = p.exec(u);
    if (m === null) continue;
    const repository = `${m[1]}/${m[2]}`;
    return REPOSITORY.test(repository) ? repository : undefined;
  }
  return undefined;
}

/** Checks the `--repo` value. @throws UsageError when it is not OWNER/REPO. */
export function checkRepositoryFlag(value: string): string {
  if (!REPOSITORY.test(value)) {
    throw new UsageError(
      `Cannot use --repo "${value}": expected OWNER/REPO (letters, digits, "-", "." and "_")`,
    );
  }
  return value;
}

/** Runs `git remote get-url origin` in `cwd` (5 s limit); undefined when it fails or times out. */
export async function gitOriginUrl(cwd?: string): Promise<string | undefined> {
  try {
    const output = await new Deno.Command("git", {
      args: ["remote", "get-url", "origin"],
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(GIT_TIMEOUT_MS),
    }).output();
    if (!output.success) return undefined;
    return new TextDecoder().decode(output.stdout).trim();
  } catch {
    return undefined; // git missing, not a checkout, or timed out
  }
}

export async function resolveRepository(flag: string | undefined, cwd?: string): Promise<ResolvedRepository> {
  if (flag !== undefined) return { repository: checkRepositoryFlag(flag), source: "flag" };
  const url = await gitOriginUrl(cwd);
  const fromGit = url === undefined ? undefined : parseGitHubRemote(url);
  if (fromGit !== undefined) return { repository: fromGit, source: "git" };
  return {
    repository: STAND_IN_REPOSITORY,
    source: "stand-in",
    warning: `Cannot determine the repository (no github.com "origin" remote): using the stand-in ` +
      `"${STAND_IN_REPOSITORY}" for {owner}/{repo}; pass --repo OWNER/REPO`,
  };
}
