// Registry download URL → Package URL (extras.md §1). Pure: no Deno, no node:.
//
// Only the exact download shapes of the table in extras.md are recognised; anything else is "not a
// package" and is not checked. Query and fragment never take part (a `?x` suffix must not defeat
// the check) and `%2f`/`%2F` in the path counts as `/` (registries decode it); beyond the spec, other
// spellings of the same path (escaped letters, `//`, `.`/`..` segments) are read as the server would.

export type Ecosystem = "npm" | "pypi" | "cargo";

export type PackageRef = {
  ecosystem: Ecosystem;
  /** npm: `name` or `@scope/name`; PyPI: PEP 503 normalised; Cargo: as written. */
  name: string;
  version: string;
  /** `pkg:<ecosystem>/<name>@<version>` (the npm scope's `@` is not escaped). */
  purl: string;
};

const VERSION = /^[A-Za-z0-9._+-]+$/;
/** npm package names (and scopes): no `/`, no `@` inside; npm itself allows `~` and upper case in old names. */
const NPM_NAME = /^[A-Za-z0-9._~-]+$/;
const PYPI_NAME = /^[A-Za-z0-9._-]+$/;
const CARGO_NAME = /^[A-Za-z0-9_-]+$/;

const NPM_HOSTS = new Set(["registry.npmjs.org", "registry.yarnpkg.com"]);
const PYPI_HOST = "files.pythonhosted.org";
const CARGO_API_HOSTS = new Set(["crates.io", "static.crates.io"]);
const CARGO_STATIC_HOST = "static.crates.io";

/** The package a registry download URL fetches, or undefined when the URL is no such download. */
export function packageFromUrl(url: string): PackageRef | undefined {
  const parts = splitUrl(url);
  if (parts === undefined) return undefined;
  const { host, path } = parts;
  if (!path.startsWith("/")) return undefined;
  const segments = canonicalSegments(path);
  if (NPM_HOSTS.has(host)) return npmPackage(segments);
  if (host === PYPI_HOST) return pypiPackage(segments);
  if (CARGO_API_HOSTS.has(host)) {
    const api = cargoApiPackage(segments);
    if (api !== undefined || host !== CARGO_STATIC_HOST) return api;
    return cargoStaticPackage(segments);
  }
  return undefined;
}

/** The PURL of a registry download URL, or undefined. */
export function purlFromUrl(url: string): string | undefined {
  return packageFromUrl(url)?.purl;
}

/** PEP 503: runs of `-`, `_`, `.` become one `-`, lower-case. */
export function normalizePypiName(name: string): string {
  return name.replace(/[-_.]+/g, "-").toLowerCase();
}

/**
 * Lower-cased host (no port, userinfo or trailing dot) and raw path of an http(s) URL; undefined for
 * other URLs and IPv6 literals (never a registry or GitHub name). Also used by token tagging.
 */
export function splitUrl(url: string): { host: string; path: string } | undefined {
  const match = /^(https?):\/\/([^/?#]*)([^?#]*)/i.exec(url);
  if (match === null) return undefined;
  let authority = match[2];
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = authority.slice(at + 1);
  if (authority.startsWith("[")) return undefined; // IPv6 literal: never a registry name
  const colon = authority.indexOf(":");
  let host = (colon >= 0 ? authority.slice(0, colon) : authority).toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);
  return { host, path: match[3] };
}

/** Characters whose percent-escape a server decodes to the same request (plus `/` per extras.md). */
const EQUIVALENT_ESCAPE = /^[A-Za-z0-9\-._~@/]$/;

/**
 * The path's segments as a registry resolves them, so that spelling a download differently does not
 * take it past the check: escapes of unreserved characters, `@` and `/` decoded (once), empty and
 * `.` segments dropped, `..` applied. This recognises more URLs than the table's literal shapes,
 * never fewer; a spelling the registry does not serve costs one needless lookup at most.
 */
function canonicalSegments(path: string): string[] {
  const decoded = path.replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16));
    return EQUIVALENT_ESCAPE.test(char) ? char : escape;
  });
  const segments: string[] = [];
  for (const segment of decoded.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  return segments;
}

function make(ecosystem: Ecosystem, name: string, version: string): PackageRef | undefined {
  if (!VERSION.test(version)) return undefined;
  return { ecosystem, name, version, purl: `pkg:${ecosystem}/${name}@${version}` };
}

/** `/<name>/-/<name>-<ver>.tgz` or `/@<scope>/<name>/-/<name>-<ver>.tgz`. */
function npmPackage(segments: string[]): PackageRef | undefined {
  let scope: string | undefined;
  let rest = segments;
  const first = segments[0];
  if (first !== undefined && first.startsWith("@")) {
    scope = first.slice(1);
    if (!NPM_NAME.test(scope)) return undefined;
    rest = segments.slice(1);
  }
  if (rest.length !== 3 || rest[1] !== "-") return undefined;
  const [name, , file] = rest;
  if (!NPM_NAME.test(name)) return undefined;
  const prefix = `${name}-`;
  if (!file.startsWith(prefix) || !file.endsWith(".tgz")) return undefined;
  const version = file.slice(prefix.length, -".tgz".length);
  return make("npm", scope === undefined ? name : `@${scope}/${name}`, version);
}

/** `/packages/…/<file>` with an sdist (`.tar.gz`, `.zip`) or a wheel (`.whl`, ≥ 5 `-`-parts). */
function pypiPackage(segments: string[]): PackageRef | undefined {
  if (segments.length < 2 || segments[0] !== "packages") return undefined;
  const file = segments[segments.length - 1];
  if (file.endsWith(".whl")) {
    const parts = file.slice(0, -".whl".length).split("-");
    if (parts.length < 5 || !PYPI_NAME.test(parts[0]) || parts[0] === "") return undefined;
    return make("pypi", normalizePypiName(parts[0]), parts[1]);
  }
  let stem: string | undefined;
  if (file.endsWith(".tar.gz")) stem = file.slice(0, -".tar.gz".length);
  else if (file.endsWith(".zip")) stem = file.slice(0, -".zip".length);
  if (stem === undefined) return undefined;
  // The version starts after the first "-" that is followed by a digit.
  const split = /^(.+?)-(\d.*)$/.exec(stem);
  if (split === null || !PYPI_NAME.test(split[1])) return undefined;
  return make("pypi", normalizePypiName(split[1]), split[2]);
}

/** `/api/v1/crates/<name>/<ver>/download`. */
function cargoApiPackage(segments: string[]): PackageRef | undefined {
  if (segments.length !== 6) return undefined;
  const [api, v1, crates, name, version, download] = segments;
  if (api !== "api" || v1 !== "v1" || crates !== "crates" || download !== "download") return undefined;
  if (!CARGO_NAME.test(name)) return undefined;
  return make("cargo", name, version);
}

/** `/crates/<name>/<name>-<ver>.crate` (static.crates.io only). */
function cargoStaticPackage(segments: string[]): PackageRef | undefined {
  if (segments.length !== 3 || segments[0] !== "crates") return undefined;
  const [, name, file] = segments;
  if (!CARGO_NAME.test(name)) return undefined;
  const prefix = `${name}-`;
  if (!file.startsWith(prefix) || !file.endsWith(".crate")) return undefined;
  return make("cargo", name, file.slice(prefix.length, -".crate".length));
}
