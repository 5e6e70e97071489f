// Log artifact upload (runner.md §9) through an injectable uploader. The real uploader speaks the
// Actions artifact service (v4) as actions/upload-artifact does, with plain fetch: CreateArtifact
// (Twirp JSON, bearer ACTIONS_RUNTIME_TOKEN) returns a signed blob URL, the zip is PUT there, and
// FinalizeArtifact records size and SHA-256. The zip is written here (stored, no compression) so no
// package is needed.

import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import process from "node:process";

export type ArtifactFile = { name: string; path: string };
export type ArtifactRequest = { name: string; files: ArtifactFile[]; retentionDays: number };
export type Uploader = (request: ArtifactRequest) => Promise<{ id?: string; size: number }>;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** A zip archive with the files stored uncompressed (DOS time fixed at 1980-01-01). */
export function storedZip(entries: Array<{ name: string; data: Uint8Array }>): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = new TextEncoder().encode(entry.name);
    const crc = crc32(entry.data);
    if (entry.data.length >= 0xffffffff) throw new Error(`Cannot zip ${entry.name}: larger than 4 GiB`);
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true); // version needed
    lv.setUint16(6, 0x0800, true); // UTF-8 names
    lv.setUint16(8, 0, true); // stored
    lv.setUint16(10, 0, true);
    lv.setUint16(12, 0x21, true); // 1980-01-01
    lv.setUint32(14, crc, true);
    lv.setUint32(18, entry.data.length, true);
    lv.setUint32(22, entry.data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const header = new Uint8Array(46 + name.length);
    const cv = new DataView(header.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 0x0314, true); // made by: Unix, 2.0
    cv.setUint16(6, 20, true);
    cv.setUint16(8, 0x0800, true);
    cv.setUint16(10, 0, true);
    cv.setUint16(12, 0, true);
    cv.setUint16(14, 0x21, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, entry.data.length, true);
    cv.setUint32(24, entry.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(38, (0o100644 << 16) >>> 0, true); // external attributes: regular file 0644
    cv.setUint32(42, offset, true);
    header.set(name, 46);
    parts.push(local, entry.data);
    central.push(header);
    offset += local.length + entry.data.length;
  }
  const centralSize = central.reduce((sum, h) => sum + h.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, centralSize, true);
  ev.setUint32(16, offset, true);
  const all = [...parts, ...central, end];
  const out = new Uint8Array(all.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of all) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The run and job ids the artifact service wants, from the runtime token's `scp` claim. */
export function backendIds(
  runtimeToken: string,
): { workflowRunBackendId: string; workflowJobRunBackendId: string } {
  const payload = runtimeToken.split(".")[1];
  if (!payload) throw new Error("Cannot upload the log: ACTIONS_RUNTIME_TOKEN is not a JWT");
  const claims = JSON.parse(
    Buffer.from(payload.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"),
  );
  for (const scope of String(claims.scp ?? "").split(" ")) {
    const parts = scope.split(":");
    if (parts[0] === "Actions.Results" && parts.length === 3) {
      return { workflowRunBackendId: parts[1], workflowJobRunBackendId: parts[2] };
    }
  }
  throw new Error("Cannot upload the log: the runtime token has no Actions.Results scope");
}

const SERVICE = "twirp/github.actions.results.api.v1.ArtifactService";

/** The real uploader (needs ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL, as JS actions get). */
export function actionsArtifactUploader(
  env: NodeJS.ProcessEnv = process.env,
  fetchImpl: typeof fetch = fetch,
): Uploader {
  return async (request) => {
    const token = env.ACTIONS_RUNTIME_TOKEN;
    const base = env.ACTIONS_RESULTS_URL;
    if (!token || !base) {
      throw new Error("Cannot upload the log: ACTIONS_RUNTIME_TOKEN or ACTIONS_RESULTS_URL is not set");
    }
    const ids = backendIds(token);
    const zip = storedZip(request.files.map((file) => ({ name: file.name, data: readFileSync(file.path) })));
    const call = async (method: string, body: Record<string, unknown>) => {
      const response = await fetchImpl(
        new URL(`${SERVICE}/${method}`, base.endsWith("/") ? base : base + "/"),
        {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(30_000),
        },
      );
      const text = await response.text();
      if (!response.ok) {
        throw new Error(
          `Cannot upload the log: ${method} answered ${response.status}: ${text.slice(0, 200)}`,
        );
      }
      return JSON.parse(text);
    };
    const expiresAt = new Date(Date.now() + request.retentionDays * 86_400_000).toISOString();
    const created = await call("CreateArtifact", { ...ids, name: request.name, version: 4, expiresAt });
    if (!created.ok || !created.signedUploadUrl) {
      throw new Error("Cannot upload the log: CreateArtifact refused it");
    }
    const put = await fetchImpl(created.signedUploadUrl, {
      method: "PUT",
      headers: { "x-ms-blob-type": "BlockBlob", "Content-Type": "application/zip" },
      body: zip,
      signal: AbortSignal.timeout(120_000),
    });
    if (!put.ok) throw new Error(`Cannot upload the log: the blob upload answered ${put.status}`);
    const hash = createHash("sha256").update(zip).digest("hex");
    const finalized = await call("FinalizeArtifact", {
      ...ids,
      name: request.name,
      size: String(zip.length),
      hash: `sha256:${hash}`,
    });
    if (!finalized.ok) throw new Error("Cannot upload the log: FinalizeArtifact refused it");
    return { id: finalized.artifactId ? String(finalized.artifactId) : undefined, size: zip.length };
  };
}
