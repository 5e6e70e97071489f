// sudo, user-namespace sysctls and CA trust against a temporary root (never the machine's files).
import assert from "node:assert/strict";
import { installCaTrust, removeCaTrust } from "../../src/runner/ca_trust.ts";
import { caEnvironment, systemPaths } from "../../src/runner/paths.ts";
import {
  disableSudo,
  enableSudo,
  enableSudoLogging,
  grantedCommands,
  restoreSudoers,
  SUDOERS_BACKUP,
  type SudoTools,
  takeSudoLog,
} from "../../src/runner/sudo.ts";
import { blockUserNamespaces, restoreUserNamespaces } from "../../src/runner/userns.ts";

const SUDOERS = "runner ALL=(ALL) NOPASSWD:ALL\n";
const CA = "-----BEGIN CERTIFICATE-----\nMIIBtestCA\n-----END CERTIFICATE-----\n";

async function testRoot(): Promise<{ root: string; state: string; cleanup: () => Promise<void> }> {
  const root = await Deno.makeTempDir({ prefix: "egress-runner-root-" });
  const state = `${root}/run/egress`;
  await Deno.mkdir(state, { recursive: true, mode: 0o700 });
  await Deno.mkdir(`${root}/etc/sudoers.d`, { recursive: true });
  return { root, state, cleanup: () => Deno.remove(root, { recursive: true }) };
}

function fakeTools(listing = "", invalid?: string): SudoTools & { checked: string[] } {
  const checked: string[] = [];
  return {
    checked,
    checkSudoers: async (path) => {
      checked.push(await Deno.readTextFile(path));
      return invalid;
    },
    listRunnerPrivileges: () => Promise.resolve(listing),
  };
}

Deno.test("sudo: disable backs up once (0600), truncates; enable and shutdown restore", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    await Deno.writeTextFile(paths.sudoersRunner, SUDOERS, { mode: 0o440 });
    const disabled = await disableSudo(paths, state, fakeTools());
    assert.deepEqual(disabled, { message: "sudo disabled", warnings: [] });
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), "");
    const backup = `${state}/${SUDOERS_BACKUP}`;
    assert.equal(await Deno.readTextFile(backup), SUDOERS);
    assert.equal((await Deno.stat(backup)).mode! & 0o777, 0o600);
    // A second disable must not overwrite the backup with the truncated file.
    await disableSudo(paths, state, fakeTools());
    assert.equal(await Deno.readTextFile(backup), SUDOERS);
    assert.deepEqual(await enableSudo(paths, state, fakeTools(), { logging: false }), {
      message: "sudo enabled",
      warnings: [],
    });
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), SUDOERS);
    await disableSudo(paths, state, fakeTools());
    assert.equal(await restoreSudoers(paths, state), `sudoers: restored ${paths.sudoersRunner}`);
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), SUDOERS);
    assert.equal((await Deno.stat(paths.sudoersRunner)).mode! & 0o777, 0o440);
    await assert.rejects(Deno.stat(backup), Deno.errors.NotFound);
    assert.equal(await restoreSudoers(paths, state), "sudoers: unchanged");
  } finally {
    await cleanup();
  }
});

Deno.test("sudo: warnings when sudo -l still lists commands; a missing file is ok with a note", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    const listing = "User runner may run the following commands on host:\n    (ALL) NOPASSWD: ALL\n";
    assert.deepEqual(grantedCommands(listing), ["(ALL) NOPASSWD: ALL"]);
    assert.deepEqual(grantedCommands("User runner is not allowed to run sudo on host.\n"), []);
    const result = await disableSudo(paths, state, fakeTools(listing));
    assert.match(result.message, /^sudo disabled \(note: .*sudoers\.d\/runner does not exist\)$/);
    assert.deepEqual(result.warnings, [
      "sudo -l -U runner still lists commands after disabling sudo: (ALL) NOPASSWD: ALL",
    ]);
    await assert.rejects(Deno.stat(paths.sudoersRunner), Deno.errors.NotFound, "never created");
    assert.match(await restoreSudoers(paths, state), /nothing to restore/);
    await assert.rejects(Deno.stat(paths.sudoersRunner), Deno.errors.NotFound);
    await assert.rejects(enableSudo(paths, `${root}/nowhere`, fakeTools(), { logging: false }), /no backup/);
  } finally {
    await cleanup();
  }
});

Deno.test("sudo: allow-sudo appends the logfile line (visudo-checked), shutdown restores the original", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    await Deno.writeTextFile(paths.sudoersRunner, SUDOERS.trimEnd(), { mode: 0o440 });
    const tools = fakeTools();
    await enableSudoLogging(paths, state, tools);
    const expected = `${SUDOERS.trimEnd()}\nDefaults logfile="${state}/sudo.log"\n`;
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), expected);
    assert.deepEqual(tools.checked, [expected], "visudo saw the new content before it was installed");
    await enableSudoLogging(paths, state, tools);
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), expected, "idempotent");
    await Deno.writeTextFile(
      `${state}/sudo.log`,
      "Dec  1 18:40:02 : runner : USER=root ; COMMAND=/bin/true\n",
    );
    assert.match((await takeSudoLog(state))!, /COMMAND=\/bin\/true/);
    assert.equal(await takeSudoLog(state), undefined, "taken once");
    await restoreSudoers(paths, state);
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), SUDOERS.trimEnd());
  } finally {
    await cleanup();
  }
});

Deno.test("sudo: visudo rejecting the change leaves the file as it was", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    await Deno.writeTextFile(paths.sudoersRunner, SUDOERS, { mode: 0o440 });
    await assert.rejects(
      enableSudoLogging(paths, state, fakeTools("", "syntax error near line 2")),
      /visudo: syntax error/,
    );
    assert.equal(await Deno.readTextFile(paths.sudoersRunner), SUDOERS);
    assert.deepEqual(
      [...Deno.readDirSync(`${root}/etc/sudoers.d`)].map((e) => e.name),
      ["runner"],
      "no temp file left",
    );
  } finally {
    await cleanup();
  }
});

Deno.test("user namespaces: Ubuntu's sysctl preferred, old value restored; fallback to max_user_namespaces", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    await Deno.mkdir(`${root}/proc/sys/user`, { recursive: true });
    await Deno.writeTextFile(paths.maxUserNamespaces, "63413\n");
    assert.deepEqual(await blockUserNamespaces(paths, state), {
      path: paths.maxUserNamespaces,
      previous: "63413",
    });
    assert.equal(await Deno.readTextFile(paths.maxUserNamespaces), "0\n");
    // A restarted supervisor blocks again: the recorded value must stay the original one.
    await blockUserNamespaces(paths, state);
    assert.match(await restoreUserNamespaces(state), /= 63413$/);
    assert.equal(await Deno.readTextFile(paths.maxUserNamespaces), "63413\n");
    assert.equal(await restoreUserNamespaces(state), "user namespaces: unchanged");

    await Deno.mkdir(`${root}/proc/sys/kernel`, { recursive: true });
    await Deno.writeTextFile(paths.usernsClone, "1\n");
    assert.equal((await blockUserNamespaces(paths, state)).path, paths.usernsClone);
    assert.equal(await Deno.readTextFile(paths.usernsClone), "0\n");
    assert.equal(await Deno.readTextFile(paths.maxUserNamespaces), "63413\n", "untouched");
    await restoreUserNamespaces(state);
    assert.equal(await Deno.readTextFile(paths.usernsClone), "1\n");

    await assert.rejects(blockUserNamespaces(systemPaths(`${root}/empty`), state), /neither/);
  } finally {
    await cleanup();
  }
});

Deno.test("CA trust: installed into the bundle and store, removed exactly", async () => {
  const { root, state, cleanup } = await testRoot();
  try {
    const paths = systemPaths(root);
    await Deno.mkdir(`${root}/etc/ssl/certs`, { recursive: true });
    const original = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----"; // no final newline
    await Deno.writeTextFile(paths.systemCaBundle, original);
    await installCaTrust(paths, state, CA);
    assert.equal(await Deno.readTextFile(paths.systemCaBundle), `${original}\n${CA}`);
    assert.equal(await Deno.readTextFile(paths.caShared), CA);
    assert.equal(await Deno.readTextFile(paths.localCaCert), CA);
    assert.equal((await Deno.stat(paths.caShared)).mode! & 0o777, 0o644);
    await installCaTrust(paths, state, CA);
    assert.equal(await Deno.readTextFile(paths.systemCaBundle), `${original}\n${CA}`, "appended once");
    // Something else appends after us: only our block goes.
    await Deno.writeTextFile(paths.systemCaBundle, "EXTRA\n", { append: true });
    await removeCaTrust(paths, state);
    assert.equal(await Deno.readTextFile(paths.systemCaBundle), `${original}\nEXTRA\n`);
    await assert.rejects(Deno.stat(paths.caShared), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(paths.localCaCert), Deno.errors.NotFound);
    assert.deepEqual(await removeCaTrust(paths, state), [], "idempotent");
    // Our block last: the newline added in front of it goes as well.
    await Deno.writeTextFile(paths.systemCaBundle, original);
    await installCaTrust(paths, state, CA);
    await removeCaTrust(paths, state);
    assert.equal(await Deno.readTextFile(paths.systemCaBundle), original);
    await assert.rejects(installCaTrust(paths, state, "not a certificate"), /not a PEM certificate/);
  } finally {
    await cleanup();
  }
});

Deno.test("CA variables point at the shared CA and the system bundle", () => {
  assert.deepEqual(caEnvironment(), {
    NODE_EXTRA_CA_CERTS: "/usr/local/share/egress/ca.pem",
    SSL_CERT_FILE: "/etc/ssl/certs/ca-certificates.crt",
    REQUESTS_CA_BUNDLE: "/etc/ssl/certs/ca-certificates.crt",
    AWS_CA_BUNDLE: "/etc/ssl/certs/ca-certificates.crt",
    HEX_CACERTS_PATH: "/etc/ssl/certs/ca-certificates.crt",
  });
  assert.equal(
    caEnvironment(systemPaths("/tmp/x/")).NODE_EXTRA_CA_CERTS,
    "/tmp/x/usr/local/share/egress/ca.pem",
  );
});
