// System-wide trust of the egress CA on the runner (runner.md §6): the certificate is copied to
// /usr/local/share/egress/ca.pem (what NODE_EXTRA_CA_CERTS and containers point at), appended to the
// system bundle and copied to /usr/local/share/ca-certificates/egress.crt; shutdown removes all
// three again. The CA key never leaves the state dir (certificates.ts deletes it).

import type { SystemPaths } from "./paths.ts";

const STATE_FILE = "ca-trust.json";

type TrustState = { pem: string; addedNewline: boolean };

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.egress-tmp`;
  await Deno.writeTextFile(temporary, content, { mode });
  await Deno.chmod(temporary, mode);
  await Deno.rename(temporary, path);
}

async function fileMode(path: string, fallback: number): Promise<number> {
  try {
    return (await Deno.stat(path)).mode! & 0o7777;
  } catch {
    return fallback;
  }
}

function normalizedPem(pem: string): string {
  const trimmed = pem.trim();
  if (!trimmed.startsWith("-----BEGIN CERTIFICATE-----") || !trimmed.endsWith("-----END CERTIFICATE-----")) {
    throw new Error("Cannot trust the egress CA: it is not a PEM certificate");
  }
  return trimmed + "\n";
}

/** Installs the CA certificate system-wide; idempotent (a second call changes nothing). */
export async function installCaTrust(paths: SystemPaths, stateDir: string, caPem: string): Promise<string[]> {
  const pem = normalizedPem(caPem);
  const done: string[] = [];
  await Deno.mkdir(dirOf(paths.caShared), { recursive: true, mode: 0o755 });
  await writeAtomically(paths.caShared, pem, 0o644);
  done.push(`copied the CA to ${paths.caShared}`);

  let bundle = "";
  try {
    bundle = await Deno.readTextFile(paths.systemCaBundle);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await Deno.mkdir(dirOf(paths.systemCaBundle), { recursive: true, mode: 0o755 });
  }
  if (!bundle.includes(pem)) {
    const addedNewline = bundle !== "" && !bundle.endsWith("\n");
    // Recorded before the bundle changes, so a crash in between still lets cleanup find the block.
    const state: TrustState = { pem, addedNewline };
    await Deno.writeTextFile(`${stateDir}/${STATE_FILE}`, JSON.stringify(state), { mode: 0o600 });
    await writeAtomically(
      paths.systemCaBundle,
      bundle + (addedNewline ? "\n" : "") + pem,
      await fileMode(paths.systemCaBundle, 0o644),
    );
    done.push(`appended the CA to ${paths.systemCaBundle}`);
  }
  await Deno.mkdir(dirOf(paths.localCaCert), { recursive: true, mode: 0o755 });
  await writeAtomically(paths.localCaCert, pem, 0o644);
  done.push(`copied the CA to ${paths.localCaCert}`);
  return done;
}

/** Removes what installCaTrust added; each part is attempted even if another fails. */
export async function removeCaTrust(paths: SystemPaths, stateDir: string): Promise<string[]> {
  const done: string[] = [];
  const failures: string[] = [];
  let state: TrustState | undefined;
  try {
    state = JSON.parse(await Deno.readTextFile(`${stateDir}/${STATE_FILE}`));
  } catch {
    state = undefined;
  }
  if (state?.pem) {
    try {
      const bundle = await Deno.readTextFile(paths.systemCaBundle);
      const at = bundle.lastIndexOf(state.pem);
      if (at >= 0) {
        const atEnd = at + state.pem.length === bundle.length;
        // The newline added before our block goes too, unless something was appended after it.
        const cut = state.addedNewline && atEnd && at > 0 && bundle[at - 1] === "\n" ? at - 1 : at;
        const restored = bundle.slice(0, cut) + bundle.slice(at + state.pem.length);
        await writeAtomically(paths.systemCaBundle, restored, await fileMode(paths.systemCaBundle, 0o644));
        done.push(`removed the CA from ${paths.systemCaBundle}`);
      }
      await Deno.remove(`${stateDir}/${STATE_FILE}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) failures.push((error as Error).message);
    }
  }
  for (const path of [paths.localCaCert, paths.caShared]) {
    try {
      await Deno.remove(path);
      done.push(`removed ${path}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) failures.push((error as Error).message);
    }
  }
  if (failures.length > 0) throw new Error(`Cannot remove the CA trust completely: ${failures.join("; ")}`);
  return done;
}
