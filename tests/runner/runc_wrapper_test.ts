// The runc wrapper end to end: installed into a temporary root over a fake runc, run against
// generated OCI bundles with Debian-, RHEL- and Alpine-style root filesystems.
import assert from "node:assert/strict";
import {
  editConfig,
  findCaBundles,
  resolveInRootfs,
  type RootfsView,
  scanRuncArgs,
} from "../../src/runner/oci_config.ts";
import { systemPaths } from "../../src/runner/paths.ts";
import {
  findNode,
  installRuncWrapper,
  onlyRootCanChange,
  removeRuncWrapper,
  WRAPPER_MARKER,
} from "../../src/runner/runc_wrapper.ts";
import { needsRoot, testWhen } from "../helpers/requirements.ts";

const repo = new URL("../../", import.meta.url).pathname;
const NODE = findNode() ?? (Deno.statSync("/usr/bin/node").isFile ? "/usr/bin/node" : undefined);
const CA = "-----BEGIN CERTIFICATE-----\nMIIBegressCA\n-----END CERTIFICATE-----\n";
const BASE = "-----BEGIN CERTIFICATE-----\nMIIBdistro\n-----END CERTIFICATE-----"; // no final newline
const FAKE_RUNC = `#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/runc-args.txt"
exit 0
`;

Deno.test("scanRuncArgs: subcommand and bundle past global options", () => {
  assert.deepEqual(scanRuncArgs(["--root", "/run/x", "--systemd-cgroup", "create", "--bundle", "/b", "id"]), {
    subcommand: "create",
    bundle: "/b",
  });
  assert.deepEqual(
    scanRuncArgs(["--log=/l", "--log-format", "json", "run", "-b", "/c", "--pid-file", "/p", "id"]),
    {
      subcommand: "run",
      bundle: "/c",
    },
  );
  assert.deepEqual(scanRuncArgs(["create", "--bundle=/d", "--console-socket", "/s", "id"]), {
    subcommand: "create",
    bundle: "/d",
  });
  assert.deepEqual(scanRuncArgs(["run", "id"]), { subcommand: "run", bundle: "." });
  assert.deepEqual(
    scanRuncArgs(["--root", "create", "state", "id"]).subcommand,
    "state",
    "--root takes a value",
  );
  assert.deepEqual(scanRuncArgs(["exec", "id", "run"]).subcommand, "exec");
});

function memoryView(files: Record<string, string>, links: Record<string, string>): RootfsView {
  return {
    readlink: (path) => links[path],
    kind: (path) =>
      path in files ? "file" : Object.keys(files).some((f) => f.startsWith(path + "/")) ? "dir" : undefined,
  };
}

Deno.test("resolveInRootfs: absolute and relative links stay inside the rootfs", () => {
  const view = memoryView({ "/etc/pki/tls-ca.pem": "x" }, {
    "/etc/ssl/certs": "../pki/tls/certs",
    "/etc/pki/tls/certs/ca-bundle.crt": "/etc/pki/tls-ca.pem",
    "/etc/ssl/cert.pem": "../../../../../../etc/shadow",
    "/loop": "/loop",
  });
  assert.equal(resolveInRootfs("/etc/ssl/certs/ca-bundle.crt", view), "/etc/pki/tls-ca.pem");
  assert.equal(resolveInRootfs("/etc/ssl/cert.pem", view), "/etc/shadow");
  assert.equal(resolveInRootfs("/loop", view), undefined);
  assert.deepEqual(findCaBundles(view), [{
    listed: "/etc/pki/tls/certs/ca-bundle.crt",
    resolved: "/etc/pki/tls-ca.pem",
  }]);
});

Deno.test("editConfig: mounts once, variables not overriding the container's", () => {
  const edit = {
    caTarget: "/usr/local/share/egress/ca.pem",
    caSource: "/host/ca.pem",
    bundles: [{
      listed: "/etc/ssl/cert.pem",
      destination: "/etc/ssl/certs/ca-certificates.crt",
      source: "/b/.egress-ca-_etc_ssl_cert.pem",
    }],
  };
  const first = editConfig({ process: { env: ["PATH=/bin", "SSL_CERT_FILE=/mine.pem"] }, mounts: [] }, edit);
  assert.deepEqual(first.keptVariables, ["SSL_CERT_FILE"]);
  assert.deepEqual(first.config.process?.env, [
    "PATH=/bin",
    "SSL_CERT_FILE=/mine.pem",
    "NODE_EXTRA_CA_CERTS=/usr/local/share/egress/ca.pem",
    "REQUESTS_CA_BUNDLE=/etc/ssl/cert.pem",
    "AWS_CA_BUNDLE=/etc/ssl/cert.pem",
    "HEX_CACERTS_PATH=/etc/ssl/cert.pem",
  ]);
  const again = editConfig(first.config, edit);
  assert.equal(again.config.mounts?.length, 2);
  assert.deepEqual(again.config.mounts?.[0], {
    destination: "/usr/local/share/egress/ca.pem",
    type: "bind",
    source: "/host/ca.pem",
    options: ["bind", "ro"],
  });
  assert.deepEqual(again.keptVariables, ["SSL_CERT_FILE"]);
  assert.throws(() => editConfig([], edit), /not a JSON object/);
});

type Distro = { files: Record<string, string>; links: Record<string, string> };
const DISTROS: Record<string, Distro & { expect: Array<{ listed: string; resolved: string }> }> = {
  debian: {
    files: { "/etc/ssl/certs/ca-certificates.crt": BASE, "/etc/hostname": "debian\n" },
    links: { "/etc/ssl/cert.pem": "/../../../../../../etc/passwd" }, // escapes nowhere: rootfs has no passwd
    expect: [{
      listed: "/etc/ssl/certs/ca-certificates.crt",
      resolved: "/etc/ssl/certs/ca-certificates.crt",
    }],
  },
  rhel: {
    files: { "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem": BASE },
    links: {
      "/etc/pki/tls/certs/ca-bundle.crt": "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
      "/etc/pki/tls/cert.pem": "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
      "/etc/ssl/certs": "../pki/tls/certs",
      "/etc/ssl/cert.pem": "../pki/tls/cert.pem",
    },
    expect: [{
      listed: "/etc/pki/tls/certs/ca-bundle.crt",
      resolved: "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    }],
  },
  alpine: {
    files: { "/etc/ssl/certs/ca-certificates.crt": BASE + "\n" },
    links: { "/etc/ssl/cert.pem": "certs/ca-certificates.crt" },
    expect: [{
      listed: "/etc/ssl/certs/ca-certificates.crt",
      resolved: "/etc/ssl/certs/ca-certificates.crt",
    }],
  },
};

async function makeBundle(dir: string, distro: Distro, env: string[]): Promise<string> {
  await Deno.mkdir(`${dir}/rootfs`, { recursive: true });
  for (const [path, content] of Object.entries(distro.files)) {
    await Deno.mkdir(`${dir}/rootfs${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/rootfs${path}`, content);
  }
  for (const [path, target] of Object.entries(distro.links)) {
    await Deno.mkdir(`${dir}/rootfs${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.symlink(target, `${dir}/rootfs${path}`);
  }
  const config = {
    ociVersion: "1.0.2",
    root: { path: "rootfs", readonly: false },
    process: { args: ["sh", "-c", "echo hi"], env },
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }],
  };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2), { mode: 0o600 });
  return dir;
}

async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isSymlink) out.push(`${path} -> ${await Deno.readLink(path)}`);
    else if (entry.isDirectory) out.push(...await snapshot(path));
    else out.push(`${path} = ${await Deno.readTextFile(path)}`);
  }
  return out.sort();
}

async function withInstalledWrapper(fn: (root: string, runc: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "egress-runc-" });
  const paths = systemPaths(root);
  try {
    await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
    await Deno.writeTextFile(paths.runc, FAKE_RUNC, { mode: 0o755 });
    await Deno.mkdir(`${root}/usr/local/share/egress`, { recursive: true });
    await Deno.writeTextFile(paths.caShared, CA);
    const outcome = await installRuncWrapper(paths, {
      node: NODE!,
      scriptSource: `${repo}action/dist/runc-wrapper.cjs`,
      caTarget: "/usr/local/share/egress/ca.pem",
      dockerSocket: `${root}/no-docker.sock`,
    });
    assert.equal(outcome.installed, true, outcome.message);
    assert.equal((await Deno.readTextFile(paths.runc)).split("\n")[1], WRAPPER_MARKER);
    assert.equal(await Deno.readTextFile(paths.runcReal), FAKE_RUNC);
    assert.equal((await Deno.stat(paths.runc)).mode! & 0o777, 0o755);
    await fn(root, paths.runc);
    assert.match(await removeRuncWrapper(paths), /removed/);
    assert.equal(await Deno.readTextFile(paths.runc), FAKE_RUNC, "the real runc is back");
    await assert.rejects(Deno.stat(paths.runcReal), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(paths.runcWrapperScript), Deno.errors.NotFound);
    assert.equal(await removeRuncWrapper(paths), "runc wrapper: not installed", "idempotent");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function runWrapper(
  runc: string,
  args: string[],
): Promise<{ code: number; stderr: string; passed: string[] }> {
  const out = await new Deno.Command(runc, { args, stdout: "piped", stderr: "piped" }).output();
  const passed = (await Deno.readTextFile(`${runc.slice(0, runc.lastIndexOf("/"))}/runc-args.txt`)).split(
    "\n",
  ).slice(0, -1);
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr), passed };
}

const noNode = NODE ? undefined : "needs node";

for (const [name, distro] of Object.entries(DISTROS)) {
  testWhen(
    noNode,
    `runc wrapper: ${name}-style rootfs gets merged bundles and the CA, read-only`,
    async () => {
      await withInstalledWrapper(async (root, runc) => {
        const bundle = await makeBundle(`${root}/bundles/${name}`, distro, ["PATH=/usr/bin"]);
        const rootfsBefore = await snapshot(`${bundle}/rootfs`);
        const args = [
          "--root",
          "/run/containerd/runc/moby",
          "--log",
          `${bundle}/log.json`,
          "--systemd-cgroup",
          "create",
          "--bundle",
          bundle,
          "--pid-file",
          `${bundle}/init.pid`,
          "c1",
        ];
        const result = await runWrapper(runc, args);
        assert.equal(result.code, 0);
        assert.deepEqual(result.passed, args, "runc.real got exactly the original arguments");
        assert.equal(result.stderr, "", "no warning");
        assert.deepEqual(await snapshot(`${bundle}/rootfs`), rootfsBefore, "the rootfs is never written");
        const config = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
        assert.equal((await Deno.stat(`${bundle}/config.json`)).mode! & 0o777, 0o600, "mode kept");
        const mounts = config.mounts.slice(1);
        assert.deepEqual(mounts[0], {
          destination: "/usr/local/share/egress/ca.pem",
          type: "bind",
          source: `${root}/usr/local/share/egress/ca.pem`,
          options: ["bind", "ro"],
        });
        assert.deepEqual(
          mounts.slice(1).map((m: { destination: string }) => m.destination),
          distro.expect.map((e) => e.resolved),
        );
        for (const [i, expected] of distro.expect.entries()) {
          const source = `${bundle}/.egress-ca-${expected.listed.replace(/\//g, "_")}`;
          assert.equal(mounts[1 + i].source, source);
          assert.deepEqual(mounts[1 + i].options, ["bind", "ro"]);
          assert.equal(await Deno.readTextFile(source), `${BASE}\n${CA}`);
          assert.equal((await Deno.stat(source)).mode! & 0o777, 0o444);
        }
        const bundleVar = distro.expect[0].listed;
        assert.deepEqual(config.process.env, [
          "PATH=/usr/bin",
          "NODE_EXTRA_CA_CERTS=/usr/local/share/egress/ca.pem",
          `SSL_CERT_FILE=${bundleVar}`,
          `REQUESTS_CA_BUNDLE=${bundleVar}`,
          `AWS_CA_BUNDLE=${bundleVar}`,
          `HEX_CACERTS_PATH=${bundleVar}`,
        ]);
        // A second create of the same bundle (0444 files already there) works and adds nothing twice.
        assert.equal((await runWrapper(runc, args)).code, 0);
        assert.equal(
          JSON.parse(await Deno.readTextFile(`${bundle}/config.json`)).mounts.length,
          config.mounts.length,
        );
        await assert.rejects(Deno.stat(`${bundle}/config.json.egress-tmp`), Deno.errors.NotFound);
      });
    },
  );
}

testWhen(
  noNode,
  "runc wrapper: user-set variables kept with a warning; other subcommands untouched; failures open",
  async () => {
    await withInstalledWrapper(async (root, runc) => {
      const id = "a".repeat(64);
      const bundle = await makeBundle(`${root}/bundles/${id}`, DISTROS.debian, [
        "SSL_CERT_FILE=/custom.pem",
        "NODE_EXTRA_CA_CERTS=/x.pem",
      ]);
      const created = await runWrapper(runc, ["run", "--bundle", bundle, "c2"]);
      assert.match(
        created.stderr,
        /warning: kept NODE_EXTRA_CA_CERTS, SSL_CERT_FILE as set by the container/,
      );
      assert.match(created.stderr, new RegExp(`bundle ${bundle}`), "no Docker API here: the bundle is named");
      assert.match(created.stderr, /process "sh -c echo hi"/);
      const env = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`)).process.env;
      assert.ok(env.includes("SSL_CERT_FILE=/custom.pem") && env.includes("NODE_EXTRA_CA_CERTS=/x.pem"));
      assert.ok(env.includes("REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"));

      const before = await Deno.readTextFile(`${bundle}/config.json`);
      const state = await runWrapper(runc, ["--root", "/r", "state", "c2"]);
      assert.deepEqual(state.passed, ["--root", "/r", "state", "c2"]);
      assert.equal(state.stderr, "");
      assert.equal(await Deno.readTextFile(`${bundle}/config.json`), before, "state does not touch bundles");

      const broken = `${root}/bundles/broken`;
      await Deno.mkdir(broken, { recursive: true });
      await Deno.writeTextFile(`${broken}/config.json`, "{not json");
      const failed = await runWrapper(runc, ["create", "-b", broken, "c3"]);
      assert.equal(failed.code, 0);
      assert.match(failed.stderr, /warning: container started without the egress CA/);
      assert.deepEqual(failed.passed, ["create", "-b", broken, "c3"], "runc.real still ran");
      assert.equal(await Deno.readTextFile(`${broken}/config.json`), "{not json");

      // The Node part gone (or Node itself): the wrapper still execs runc.real.
      await Deno.remove(systemPaths(root).runcWrapperScript);
      const bare = await runWrapper(runc, ["create", "--bundle", bundle, "c4"]);
      assert.deepEqual(bare.passed, ["create", "--bundle", bundle, "c4"]);
    });
  },
);

testWhen(noNode, "runc wrapper install: skipped without runc or with a foreign runc.real", async () => {
  const root = await Deno.makeTempDir({ prefix: "egress-runc-" });
  try {
    const paths = systemPaths(root);
    const options = { node: NODE!, scriptSource: `${repo}action/dist/runc-wrapper.cjs` };
    assert.match((await installRuncWrapper(paths, options)).message, /is not an executable file/);
    await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
    await Deno.writeTextFile(paths.runc, FAKE_RUNC, { mode: 0o755 });
    await Deno.writeTextFile(paths.runcReal, "other", { mode: 0o755 });
    const outcome = await installRuncWrapper(paths, options);
    assert.equal(outcome.installed, false);
    assert.match(outcome.message, /already exists/);
    assert.equal(await Deno.readTextFile(paths.runc), FAKE_RUNC, "untouched");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

testWhen(
  needsRoot(),
  "findNode: only a node that no one but root can replace runs in the wrapper",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "egress-node-" }); // in sticky /tmp: allowed
    try {
      await Deno.chmod(dir, 0o755);
      await Deno.writeTextFile(`${dir}/node`, "#!/bin/sh\n", { mode: 0o755 });
      await Deno.chmod(`${dir}/node`, 0o755);
      assert.equal(onlyRootCanChange(`${dir}/node`), true);
      assert.equal(findNode(`relative:${dir}`), `${dir}/node`);
      await Deno.chmod(dir, 0o777); // anyone could rename it away and put their own there
      assert.equal(findNode(dir), undefined);
      await Deno.chmod(dir, 0o755);
      await Deno.chmod(`${dir}/node`, 0o775);
      assert.equal(findNode(dir), undefined, "group-writable file");
      await Deno.chmod(`${dir}/node`, 0o755);
      await Deno.chown(`${dir}/node`, 65534, 65534);
      assert.equal(findNode(dir), undefined, "owned by the runner user");
      await Deno.symlink(`${dir}/node`, `${dir}/link`);
      assert.equal(onlyRootCanChange(`${dir}/link`), false, "links are judged by their target");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
