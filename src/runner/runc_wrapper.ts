// Installs and removes the runc wrapper (runner.md §6). /usr/bin/runc becomes a `#!/bin/sh` script:
// for `create`/`run` it first runs the Node part (action/dist/runc-wrapper.cjs, copied next to the
// shared CA) with stdin closed, ignoring its exit status, and in every case ends with
// `exec runc.real "$@"`, so Docker keeps working even if Node or the script is gone. Docker's own
// configuration is never edited and dockerd is never restarted.

import type { SystemPaths } from "./paths.ts";

export const WRAPPER_MARKER = "# egress runc wrapper: installed by egress, removed at its shutdown";

export type WrapperOptions = {
  /** absolute path of the Node binary */
  node: string;
  /** the bundled Node part (action/dist/runc-wrapper.cjs) */
  scriptSource: string;
  /** where the container sees the CA (default: the host path of the shared CA) */
  caTarget?: string;
  dockerSocket?: string;
};

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The shell script that replaces /usr/bin/runc. */
export function wrapperScript(paths: SystemPaths, options: WrapperOptions): string {
  const env = [
    `EGRESS_CA_SOURCE=${shellQuote(paths.caShared)}`,
    `EGRESS_CA_TARGET=${shellQuote(options.caTarget ?? paths.caShared)}`,
    ...(options.dockerSocket ? [`EGRESS_DOCKER_SOCKET=${shellQuote(options.dockerSocket)}`] : []),
  ].join(" ");
  return [
    "#!/bin/sh",
    WRAPPER_MARKER,
    'case " $* " in',
    `  *" create "*|*" run "*) ${env} ${shellQuote(options.node)} ${
      shellQuote(paths.runcWrapperScript)
    } "$@" </dev/null || true ;;`,
    "esac",
    `exec ${shellQuote(paths.runcReal)} "$@"`,
    "",
  ].join("\n");
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const stat = await Deno.stat(path);
    return stat.isFile && ((stat.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function isOurWrapper(path: string): Promise<boolean> {
  try {
    return (await Deno.readTextFile(path)).split("\n")[1] === WRAPPER_MARKER;
  } catch {
    return false;
  }
}

/**
 * Only root can change `path`: the file and every directory above it are owned by root and not
 * writable by group or others (a sticky directory such as /tmp is fine: nobody else can replace
 * root's entries there). The wrapper runs this Node as root for every container, and the runner
 * user must not be able to swap it.
 */
export function onlyRootCanChange(path: string): boolean {
  try {
    const real = Deno.realPathSync(path);
    const file = Deno.statSync(real);
    if (file.uid !== 0 || ((file.mode ?? 0) & 0o022) !== 0) return false;
    for (
      let dir = real.slice(0, real.lastIndexOf("/"));
      dir !== "";
      dir = dir.slice(0, dir.lastIndexOf("/"))
    ) {
      const stat = Deno.statSync(dir);
      const mode = stat.mode ?? 0;
      if (stat.uid !== 0 || ((mode & 0o022) !== 0 && (mode & 0o1000) === 0)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Finds `node` on PATH (absolute) that only root can change, for the wrapper script. */
export function findNode(pathVariable = Deno.env.get("PATH") ?? ""): string | undefined {
  for (const dir of pathVariable.split(":").filter((d) => d.startsWith("/"))) {
    try {
      const stat = Deno.statSync(`${dir}/node`);
      if (stat.isFile && ((stat.mode ?? 0) & 0o111) !== 0 && onlyRootCanChange(`${dir}/node`)) {
        return `${dir}/node`;
      }
    } catch {
      // not here
    }
  }
  return undefined;
}

export type InstallOutcome = { installed: boolean; message: string };

/**
 * runc → runc.real, wrapper → runc (0755). A wrapper left by a killed run is refreshed in place;
 * anything else already at runc.real means the system is not as expected: skip (warning).
 */
export async function installRuncWrapper(
  paths: SystemPaths,
  options: WrapperOptions,
): Promise<InstallOutcome> {
  const dir = paths.runcWrapperScript.slice(0, paths.runcWrapperScript.lastIndexOf("/"));
  const leftover = await isOurWrapper(paths.runc) && await isExecutableFile(paths.runcReal);
  if (!leftover) {
    if (!(await isExecutableFile(paths.runc))) {
      return {
        installed: false,
        message: `runc wrapper not installed: ${paths.runc} is not an executable file`,
      };
    }
    if (await exists(paths.runcReal)) {
      return { installed: false, message: `runc wrapper not installed: ${paths.runcReal} already exists` };
    }
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  const scriptTemporary = `${paths.runcWrapperScript}.egress-tmp`;
  await Deno.copyFile(options.scriptSource, scriptTemporary);
  await Deno.chmod(scriptTemporary, 0o644);
  await Deno.rename(scriptTemporary, paths.runcWrapperScript);
  const wrapperTemporary = `${paths.runc}.egress-tmp`;
  await Deno.writeTextFile(wrapperTemporary, wrapperScript(paths, options), { mode: 0o755 });
  await Deno.chmod(wrapperTemporary, 0o755);
  if (!leftover) {
    // Between these two renames runc is briefly absent; a container started in that instant fails
    // to start (never starts unfiltered).
    await Deno.rename(paths.runc, paths.runcReal);
  }
  await Deno.rename(wrapperTemporary, paths.runc);
  return { installed: true, message: `runc wrapper installed (${paths.runc} → ${paths.runcReal})` };
}

/** Shutdown (and leftover cleanup): puts the real runc back; a no-op when no wrapper is installed. */
export async function removeRuncWrapper(paths: SystemPaths): Promise<string> {
  let message = "runc wrapper: not installed";
  if (await isOurWrapper(paths.runc) && await exists(paths.runcReal)) {
    await Deno.rename(paths.runcReal, paths.runc);
    message = `runc wrapper removed (${paths.runcReal} → ${paths.runc})`;
  }
  await Deno.remove(paths.runcWrapperScript).catch(() => {});
  return message;
}
