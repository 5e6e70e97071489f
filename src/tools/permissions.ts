// `egress permissions` (cli.md §permissions), pure part: from the request lines that carried the
// job's GitHub token (`github_token: true`), the minimal `permissions:` block. No Deno, no node:.

export type Access = "read" | "write";

/** The fields of a log line this module reads. */
export type TokenRequest = { url?: string; method?: string; github_token?: boolean };

export type PermissionsResult = {
  /** Scope → access, keys sorted. */
  permissions: Record<string, Access>;
  /** One per repository with issue-or-PR requests not attributable to pull requests. */
  notes: string[];
  /** Requests with the token whose permission is not known, deduplicated and sorted. */
  unknown: Array<{ method: string; path: string }>;
  /** Lines with `github_token: true`. */
  tagged: number;
};

type Grant = { scope: string; access: Access };
/** What a repository-relative path needs. */
type Need =
  | { kind: "grant"; grants: Grant[] }
  | { kind: "ambiguous"; access: Access; number?: string }
  | { kind: "none" }
  | { kind: "unknown" };

type TableEntry = {
  pattern: string[];
  /** Methods this entry applies to; undefined = any. */
  methods?: readonly string[];
  /** Scope grants; access "by-method" = GET read, else write. */
  result:
    | { kind: "scope"; scope: string; access: Access | "by-method" }
    | { kind: "ambiguous" }
    | { kind: "issues-and-prs-read" };
};

const ISSUE_OR_PR_PATHS = [
  "issues/*",
  "issues/*/assignees",
  "issues/*/comments",
  "issues/*/events",
  "issues/*/timeline",
  "issues/*/lock",
  "issues/*/labels",
  "issues/*/labels/*",
  "issues/*/reactions",
  "issues/*/reactions/*",
  "issues/comments/*",
  "issues/comments/*/reactions",
  "issues/events/*",
];

function entry(
  path: string,
  methods: readonly string[] | undefined,
  result: TableEntry["result"],
): TableEntry {
  return { pattern: path.split("/"), methods, result };
}

const contents = (access: Access | "by-method") => ({ kind: "scope" as const, scope: "contents", access });
const issues = (access: Access | "by-method") => ({ kind: "scope" as const, scope: "issues", access });

/** cli.md §permissions rule 5, sorted so that entries with fewer wildcards are tried first. */
const TABLE: TableEntry[] = [
  entry("codeowners/errors", ["GET"], contents("read")),
  entry("branches", ["GET"], contents("read")),
  entry("pulls/*/merge", ["PUT"], contents("write")),
  entry("pulls/*/update-branch", ["PUT"], contents("write")),
  entry("comments/*/reactions", ["POST"], contents("write")),
  entry("merge-upstream", ["POST"], contents("write")),
  entry("merges", ["POST"], contents("write")),
  entry("dispatches", ["POST"], contents("write")),
  entry("comments/*/reactions/*", ["DELETE"], contents("write")),
  entry("comments/*", ["PATCH", "DELETE"], contents("write")),
  ...ISSUE_OR_PR_PATHS.map((p) => entry(p, undefined, { kind: "ambiguous" })),
  ...["issues/comments", "issues/events", "assignees", "issues"].map((p) =>
    entry(p, ["GET"], { kind: "issues-and-prs-read" })
  ),
  entry("issues", ["POST"], issues("write")),
  ...["labels", "labels/*", "milestones", "milestones/*", "milestones/*/labels"].map((p) =>
    entry(p, undefined, issues("by-method"))
  ),
].map((e, order) => ({ e, order, wildcards: e.pattern.filter((s) => s === "*").length }))
  .sort((a, b) => a.wildcards - b.wildcards || a.order - b.order)
  .map(({ e }) => e);

/** cli.md §permissions rule 6: first path segment → scope. */
const FIRST_SEGMENT_SCOPES: Record<string, string> = {
  "actions": "actions",
  "check-runs": "checks",
  "check-suites": "checks",
  "pulls": "pull-requests",
  "releases": "contents",
  "git": "contents",
  "commits": "contents",
  "compare": "contents",
  "contents": "contents",
  "deployments": "deployments",
  "environments": "deployments",
  "pages": "pages",
  "code-scanning": "security-events",
  "secret-scanning": "security-events",
  "dependabot": "security-events",
  "statuses": "statuses",
  "projects": "projects",
  "packages": "packages",
};

/** GET read, else write (HEAD was turned into GET before). */
function byMethod(method: string): Access {
  return method === "GET" ? "read" : "write";
}

/** The permission a repository-relative path (segments after `/repos/o/r/`) needs. */
export function repositoryPathNeed(method: string, segments: string[]): Need {
  if (segments.length === 0) return { kind: "none" };
  for (const { pattern, methods, result } of TABLE) {
    if (methods !== undefined && !methods.includes(method)) continue;
    if (pattern.length !== segments.length) continue;
    if (!pattern.every((p, i) => p === "*" || p === segments[i])) continue;
    switch (result.kind) {
      case "scope":
        return {
          kind: "grant",
          grants: [{
            scope: result.scope,
            access: result.access === "by-method" ? byMethod(method) : result.access,
          }],
        };
      case "issues-and-prs-read":
        return {
          kind: "grant",
          grants: [{ scope: "issues", access: "read" }, { scope: "pull-requests", access: "read" }],
        };
      case "ambiguous": {
        // `issues/<n>/…` names an issue or PR number; `issues/comments/<id>` and `issues/events/<id>` do not.
        const number = /^\d+$/.test(segments[1]) ? segments[1] : undefined;
        return { kind: "ambiguous", access: byMethod(method), ...(number !== undefined ? { number } : {}) };
      }
    }
  }
  const scope = Object.hasOwn(FIRST_SEGMENT_SCOPES, segments[0])
    ? FIRST_SEGMENT_SCOPES[segments[0]]
    : undefined;
  if (scope === undefined) return { kind: "unknown" };
  return { kind: "grant", grants: [{ scope, access: byMethod(method) }] };
}

type ParsedRequest = { host: string; path: string; method: string };

function parseRequest(line: TokenRequest): ParsedRequest | undefined {
  if (typeof line.url !== "string") return undefined;
  const match = /^https?:\/\/([^/?#]*)([^?#]*)/i.exec(line.url);
  if (match === null) return undefined;
  let authority = match[1];
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  const colon = authority.indexOf(":");
  let host = (colon >= 0 ? authority.slice(0, colon) : authority).toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);
  let method = typeof line.method === "string" && line.method !== "" ? line.method.toUpperCase() : "GET";
  if (method === "HEAD") method = "GET";
  return { host, path: match[2] === "" ? "/" : match[2], method };
}

/** `/repos/<owner>/<repo>/…` or `/repositories/<id>/…` → repository key and the rest. */
function splitRepositoryPath(path: string): { repository: string; rest: string[] } | undefined {
  const segments = path.split("/").filter((s) => s !== "");
  if (segments[0] === "repos" && segments.length >= 3) {
    return { repository: `${segments[1]}/${segments[2]}`.toLowerCase(), rest: segments.slice(3) };
  }
  if (segments[0] === "repositories" && segments.length >= 2) {
    return { repository: `repositories/${segments[1]}`, rest: segments.slice(2) };
  }
  return undefined;
}

/** The minimal permissions for the tagged request lines of a log (cli.md §permissions rules 1–8). */
export function computePermissions(lines: Iterable<TokenRequest>): PermissionsResult {
  const permissions = new Map<string, Access>();
  const grant = (scope: string, access: Access) => {
    if (permissions.get(scope) !== "write") permissions.set(scope, access); // rule 8: write beats read
  };
  const unknown = new Map<string, { method: string; path: string }>();
  const pullNumbers = new Map<string, Set<string>>();
  const ambiguous: Array<{ repository: string; access: Access; number?: string }> = [];
  let tagged = 0;

  for (const line of lines) {
    const request = parseRequest(line);
    if (request !== undefined && request.host === "api.github.com") notePullNumber(pullNumbers, request.path);
    if (line.github_token !== true) continue;
    tagged++;
    if (request === undefined) continue;
    const { host, path, method } = request;
    if (host.endsWith(".actions.githubusercontent.com")) {
      grant("id-token", "write");
      continue;
    }
    if (host === "uploads.github.com") {
      grant("contents", byMethod(method));
      continue;
    }
    if (host !== "api.github.com") continue;
    const repositoryPath = splitRepositoryPath(path);
    const need = repositoryPath === undefined
      ? { kind: "unknown" as const }
      : repositoryPathNeed(method, repositoryPath.rest);
    switch (need.kind) {
      case "none":
        break;
      case "unknown":
        unknown.set(`${method} ${path}`, { method, path });
        break;
      case "grant":
        for (const g of need.grants) grant(g.scope, g.access);
        break;
      case "ambiguous":
        ambiguous.push({
          repository: repositoryPath!.repository,
          access: need.access,
          ...(need.number !== undefined ? { number: need.number } : {}),
        });
        break;
    }
  }

  // Rule 7: a number seen as /pulls/<n> in the same repository is a pull request.
  const unresolved = new Map<string, Set<string>>();
  for (const { repository, access, number } of ambiguous) {
    if (number !== undefined && pullNumbers.get(repository)?.has(number)) {
      grant("pull-requests", access);
      continue;
    }
    grant("issues", access);
    grant("pull-requests", access);
    const labels = unresolved.get(repository) ?? new Set<string>();
    labels.add(number !== undefined ? `#${number}` : "comment/event ids");
    unresolved.set(repository, labels);
  }
  const notes = [...unresolved.entries()].sort(([a], [b]) => compare(a, b)).map(([repository, labels]) =>
    `note: ${repository}: ${
      [...labels].sort(compareLabels).join(", ")
    } may be issues or pull requests: granted both issues and pull-requests`
  );

  const sorted: Record<string, Access> = {};
  for (const scope of [...permissions.keys()].sort(compare)) sorted[scope] = permissions.get(scope)!;
  return {
    permissions: sorted,
    notes,
    unknown: [...unknown.values()].sort((a, b) => compare(a.path, b.path) || compare(a.method, b.method)),
    tagged,
  };
}

/** Rule 7: any `/pulls/<n>` request in the log (tagged or not) shows that `n` is a pull request. */
function notePullNumber(pullNumbers: Map<string, Set<string>>, path: string) {
  const repositoryPath = splitRepositoryPath(path);
  if (repositoryPath === undefined || repositoryPath.rest[0] !== "pulls") return;
  const number = repositoryPath.rest[1];
  if (number === undefined || !/^\d+$/.test(number)) return;
  const known = pullNumbers.get(repositoryPath.repository) ?? new Set<string>();
  known.add(number);
  pullNumbers.set(repositoryPath.repository, known);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `#2` before `#10`; the id label last. */
function compareLabels(a: string, b: string): number {
  const na = a.startsWith("#") && /^\d+$/.test(a.slice(1)) ? Number(a.slice(1)) : Infinity;
  const nb = b.startsWith("#") && /^\d+$/.test(b.slice(1)) ? Number(b.slice(1)) : Infinity;
  return na - nb || compare(a, b);
}

/** The YAML block (`permissions:` then `  scope: access`, then `# note` lines); `{}` when empty. */
export function formatPermissions(result: PermissionsResult): string {
  const lines: string[] = [];
  const scopes = Object.keys(result.permissions);
  if (scopes.length === 0) lines.push("permissions: {}");
  else {
    lines.push("permissions:");
    for (const scope of scopes) lines.push(`  ${scope}: ${result.permissions[scope]}`);
  }
  for (const note of result.notes) lines.push(`# ${note}`);
  return lines.join("\n") + "\n";
}

/** The unknown requests as comment lines (for stderr). */
export function formatUnknown(result: PermissionsResult): string {
  return result.unknown.map((u) => `# unknown: ${u.method} ${u.path}\n`).join("");
}
