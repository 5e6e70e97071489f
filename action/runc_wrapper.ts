// Node part of the runc wrapper (runner.md §6). /usr/bin/runc is a small `#!/bin/sh` script
// (src/runner/runc_wrapper.ts writes it) that runs this for `create`/`run` and then always execs
// runc.real with the original arguments. This only edits the bundle's config.json: read-only bind
// mounts of the egress CA and of merged CA bundles, and the CA variables. Every failure is a warning
// on stderr and the container starts unchanged. Node, not Deno: Node is on every runner and starts
// in ~40 ms; there is no compiler on the runner for a static binary.

import {
  chmodSync,
  lstatSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { join, resolve } from "node:path";
import {
  containerIdOfBundle,
  editConfig,
  findCaBundles,
  mergeBundle,
  mergedBundleName,
  modifiesBundle,
  type RootfsView,
  scanRuncArgs,
} from "../src/runner/oci_config.ts";

function warn(message: string): void {
  process.stderr.write(`egress runc wrapper: warning: ${message}\n`);
}

function rootfsView(rootfs: string): RootfsView {
  const hostPath = (path: string) => join(rootfs, path);
  return {
    readlink(path) {
      try {
        return lstatSync(hostPath(path)).isSymbolicLink() ? readlinkSync(hostPath(path)) : undefined;
      } catch {
        return undefined;
      }
    },
    kind(path) {
      try {
        const stat = lstatSync(hostPath(path));
        return stat.isFile() ? "file" : stat.isDirectory() ? "dir" : "other";
      } catch {
        return undefined;
      }
    },
  };
}

/** Config.Image of a container from the Docker API (2 s); undefined on any failure. */
function dockerImage(socketPath: string, id: string): Promise<string | undefined> {
  return new Promise((done) => {
    const req = request(
      { socketPath, path: `/containers/${id}/json`, method: "GET", timeout: 2000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => {
          try {
            done(res.statusCode === 200 ? JSON.parse(body)?.Config?.Image || undefined : undefined);
          } catch {
            done(undefined);
          }
        });
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => done(undefined));
    req.end();
  });
}

function writeReadOnly(path: string, content: string): void {
  try {
    unlinkSync(path); // an earlier create of the same bundle left a 0444 file
  } catch {
    // none
  }
  writeFileSync(path, content, { mode: 0o444 });
  chmodSync(path, 0o444);
}

async function wrap(argv: string[]): Promise<void> {
  const invocation = scanRuncArgs(argv);
  if (!modifiesBundle(invocation)) return;
  const caSource = process.env.EGRESS_CA_SOURCE;
  const caTarget = process.env.EGRESS_CA_TARGET || caSource;
  if (!caSource || !caTarget) throw new Error("EGRESS_CA_SOURCE is not set");
  const caPem = readFileSync(caSource, "utf8");
  const bundleDir = resolve(invocation.bundle);
  const configPath = join(bundleDir, "config.json");
  const configText = readFileSync(configPath, "utf8");
  const original = JSON.parse(configText);
  const rootPath = original?.root?.path;
  if (typeof rootPath !== "string" || rootPath === "") throw new Error(`${configPath} has no root.path`);
  const rootfs = resolve(bundleDir, rootPath);
  const bundles = [];
  for (const found of findCaBundles(rootfsView(rootfs))) {
    const source = join(bundleDir, mergedBundleName(found.listed));
    writeReadOnly(source, mergeBundle(readFileSync(join(rootfs, found.resolved), "utf8"), caPem));
    bundles.push({ listed: found.listed, destination: found.resolved, source });
  }
  const { config, keptVariables } = editConfig(original, { caSource, caTarget, bundles });
  const temporary = `${configPath}.egress-tmp`;
  writeFileSync(temporary, JSON.stringify(config), { mode: statSync(configPath).mode & 0o7777 });
  renameSync(temporary, configPath);
  if (keptVariables.length > 0) {
    const id = containerIdOfBundle(bundleDir);
    const image = id
      ? await dockerImage(process.env.EGRESS_DOCKER_SOCKET || "/var/run/docker.sock", id)
      : undefined;
    const args = Array.isArray(config.process?.args) ? config.process.args.join(" ") : "";
    warn(
      `kept ${keptVariables.join(", ")} as set by the container (${
        image ? `image ${image}` : `bundle ${bundleDir}`
      }, ` +
        `process ${JSON.stringify(args)}): TLS through egress may fail there`,
    );
  }
}

wrap(process.argv.slice(2)).then(
  () => process.exit(0),
  (error) => {
    warn(`container started without the egress CA: ${(error as Error).message}`);
    process.exit(0);
  },
);
