// The runc wrapper's decisions (runner.md §6), pure so they can be tested without runc: which
// invocations to touch, where the bundle is, which CA bundles a root filesystem has, and how the
// OCI config changes. The Node entry (action/runc_wrapper.ts) does the file work. No Deno API.

import { CA_VARIABLES } from "./paths.ts";

/** Global options of runc (and of create/run) that take a value. */
const OPTIONS_WITH_VALUE = new Set([
  "--root",
  "--log",
  "--log-format",
  "--criu",
  "--bundle",
  "-b",
  "--console-socket",
  "--pid-file",
  "--preserve-fds",
]);

export type RuncInvocation = { subcommand?: string; bundle: string };

/** Scans runc's argv: the first word not an option (or an option's value) is the subcommand. */
export function scanRuncArgs(argv: readonly string[]): RuncInvocation {
  let subcommand: string | undefined;
  let bundle = ".";
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith("--bundle=")) {
      bundle = arg.slice("--bundle=".length);
    } else if (arg.startsWith("--") && arg.includes("=")) {
      continue;
    } else if (arg === "--bundle" || arg === "-b") {
      if (i + 1 < argv.length) bundle = argv[++i];
    } else if (OPTIONS_WITH_VALUE.has(arg)) {
      i++;
    } else if (arg.startsWith("-")) {
      continue; // a flag without value, e.g. --systemd-cgroup
    } else if (subcommand === undefined) {
      subcommand = arg;
    }
  }
  return { subcommand, bundle };
}

/** Only these start a container from a bundle. */
export function modifiesBundle(invocation: RuncInvocation): boolean {
  return invocation.subcommand === "create" || invocation.subcommand === "run";
}

/** CA bundle locations of the common distributions (Debian/Ubuntu, RHEL/Fedora, Alpine). */
export const CONTAINER_CA_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/ssl/cert.pem",
] as const;

/** `<bundle>/.egress-ca-<path with / → _>` */
export function mergedBundleName(path: string): string {
  return `.egress-ca-${path.replace(/\//g, "_")}`;
}

/** What the wrapper needs from the file system, relative to a root filesystem. */
export type RootfsView = {
  /** symlink target, or undefined when `path` is not a symlink (or is missing) */
  readlink(path: string): string | undefined;
  /** "file", "dir", "other", or undefined when missing */
  kind(path: string): "file" | "dir" | "other" | undefined;
};

const MAX_SYMLINKS = 40;

/**
 * Resolves an absolute in-container path inside the root filesystem, following symlinks as the
 * container would see them: absolute targets start at the rootfs, `..` never climbs above it.
 * Returns the resolved in-container path, or undefined (missing, loop).
 */
export function resolveInRootfs(path: string, view: RootfsView): string | undefined {
  const pending = path.split("/").filter(Boolean);
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === ".") continue;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const candidate = "/" + [...resolved, part].join("/");
    const target = view.readlink(candidate);
    if (target === undefined) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) return undefined;
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter(Boolean));
  }
  const final = "/" + resolved.join("/");
  return final;
}

/** A CA bundle found in the rootfs: the listed path, and where it really is. */
export type FoundBundle = { listed: string; resolved: string };

/** The listed CA bundles that are regular files in the rootfs, de-duplicated by resolved path. */
export function findCaBundles(view: RootfsView): FoundBundle[] {
  const found: FoundBundle[] = [];
  for (const listed of CONTAINER_CA_BUNDLES) {
    const resolved = resolveInRootfs(listed, view);
    if (resolved === undefined || view.kind(resolved) !== "file") continue;
    if (found.some((bundle) => bundle.resolved === resolved)) continue;
    found.push({ listed, resolved });
  }
  return found;
}

/** Original bundle + newline if missing + the CA. */
export function mergeBundle(original: string, caPem: string): string {
  const base = original === "" || original.endsWith("\n") ? original : original + "\n";
  return base + (caPem.endsWith("\n") ? caPem : caPem + "\n");
}

type OciMount = { destination?: string; type?: string; source?: string; options?: string[] };
type OciConfig = {
  root?: { path?: string };
  mounts?: OciMount[];
  process?: { env?: string[]; args?: string[] };
  [key: string]: unknown;
};

export type ConfigEdit = {
  /** in-container path of the egress CA (bind-mounted from `caSource`) */
  caTarget: string;
  caSource: string;
  /**
   * merged bundles: the listed path (what the variables name), the resolved in-container
   * destination of the mount, and the file written in the bundle dir
   */
  bundles: Array<{ listed: string; destination: string; source: string }>;
};

export type EditResult = { config: OciConfig; keptVariables: string[] };

function readOnlyBind(destination: string, source: string): OciMount {
  return { destination, type: "bind", source, options: ["bind", "ro"] };
}

/**
 * Adds the read-only bind mounts and the CA variables. Variables the container already sets are
 * kept as they are and reported. Mounts already present (same destination and source) are not
 * added twice.
 */
export function editConfig(original: unknown, edit: ConfigEdit): EditResult {
  if (original === null || typeof original !== "object" || Array.isArray(original)) {
    throw new Error("Cannot edit config.json: it is not a JSON object");
  }
  const config = structuredClone(original) as OciConfig;
  const mounts = Array.isArray(config.mounts) ? config.mounts : [];
  const wanted = [
    readOnlyBind(edit.caTarget, edit.caSource),
    ...edit.bundles.map((b) => readOnlyBind(b.destination, b.source)),
  ];
  for (const mount of wanted) {
    if (!mounts.some((m) => m.destination === mount.destination && m.source === mount.source)) {
      mounts.push(mount);
    }
  }
  config.mounts = mounts;
  config.process = config.process && typeof config.process === "object" ? config.process : {};
  const env = Array.isArray(config.process.env) ? config.process.env : [];
  const bundlePath = edit.bundles[0]?.listed ?? edit.caTarget;
  const values: Record<string, string> = {};
  for (const key of CA_VARIABLES) values[key] = key === "NODE_EXTRA_CA_CERTS" ? edit.caTarget : bundlePath;
  const keptVariables: string[] = [];
  for (const key of CA_VARIABLES) {
    const existing = env.find((entry) => typeof entry === "string" && entry.startsWith(`${key}=`));
    if (existing === undefined) env.push(`${key}=${values[key]}`);
    else if (existing !== `${key}=${values[key]}`) keptVariables.push(key);
  }
  config.process.env = env;
  return { config, keptVariables };
}

/** A Docker container id as bundle directory name (64 lower-case hex). */
export function containerIdOfBundle(bundleDir: string): string | undefined {
  const name = bundleDir.replace(/\/+$/, "").split("/").at(-1) ?? "";
  return /^[0-9a-f]{64}$/.test(name) ? name : undefined;
}
