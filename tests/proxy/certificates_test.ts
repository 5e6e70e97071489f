import assert from "node:assert/strict";
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import { X509Certificate } from "node:crypto";
import forge from "node-forge";
import { CA_VALIDITY_MS, EgressCertificates } from "../../src/proxy/certificates.ts";
import { commandExists, testWhen } from "../helpers/requirements.ts";

const OPENSSL = "/usr/bin/openssl";

async function withStateDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "egress-cert-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("CA is created with the spec's name, validity, constraints and file modes", async () => {
  await withStateDir(async (dir) => {
    const before = Date.now();
    const certs = await EgressCertificates.loadOrCreate(dir);
    assert.equal(certs.createdCa, true);
    assert.match(certs.caCommonName, /^egress CA [0-9a-f]{8}$/);
    assert.equal((await Deno.stat(`${dir}/ca-key.pem`)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/ca.pem`)).mode! & 0o777, 0o644);
    const cert = forge.pki.certificateFromPem(await Deno.readTextFile(`${dir}/ca.pem`));
    assert.equal(cert.subject.getField("CN").value, certs.caCommonName);
    assert.equal(cert.issuer.getField("CN").value, certs.caCommonName);
    const from = cert.validity.notBefore.getTime();
    const to = cert.validity.notAfter.getTime();
    // One hour back-dated (second precision in UTCTime), seven days long.
    assert.ok(
      Math.abs(from - (before - 3600_000)) < 5_000,
      `notBefore ${cert.validity.notBefore.toISOString()}`,
    );
    assert.ok(Math.abs(to - from - CA_VALIDITY_MS) < 2_000);
    const basic = cert.getExtension("basicConstraints") as { cA: boolean; critical: boolean };
    assert.equal(basic.cA, true);
    const usage = cert.getExtension("keyUsage") as Record<string, boolean>;
    assert.equal(usage.keyCertSign, true);
    assert.equal(usage.cRLSign, true);
    assert.equal(usage.digitalSignature ?? false, false);
    assert.ok(cert.verify(cert), "self-signed signature verifies");
  });
});

Deno.test("CA is reused across restarts, and replaced when the stored one is unusable", async () => {
  await withStateDir(async (dir) => {
    const first = await EgressCertificates.loadOrCreate(dir);
    const second = await EgressCertificates.loadOrCreate(dir);
    assert.equal(second.createdCa, false);
    assert.equal(second.caCertPem, first.caCertPem);
    // A leaf from the restarted instance chains to the same CA.
    const leaf = await second.leafFor("reuse.example.test");
    const caCert = new X509Certificate(first.caCertPem);
    assert.ok(new X509Certificate(leaf.certPem).verify(caCert.publicKey));

    // Key that does not belong to the certificate ⇒ new CA.
    const other = await withOtherKey();
    await Deno.writeTextFile(`${dir}/ca-key.pem`, other);
    const third = await EgressCertificates.loadOrCreate(dir);
    assert.equal(third.createdCa, true);
    assert.notEqual(third.caCertPem, first.caCertPem);

    // Garbage certificate ⇒ new CA.
    await Deno.writeTextFile(`${dir}/ca.pem`, "not a certificate");
    assert.equal((await EgressCertificates.loadOrCreate(dir)).createdCa, true);

    // Expired (clock moved past the validity) ⇒ new CA.
    const later = new Date(Date.now() + CA_VALIDITY_MS + 3600_000);
    const expired = await EgressCertificates.loadOrCreate(dir, { now: () => later });
    assert.equal(expired.createdCa, true);

    // A widened key mode is narrowed again on reuse.
    await Deno.chmod(`${dir}/ca-key.pem`, 0o644);
    const reused = await EgressCertificates.loadOrCreate(dir, { now: () => later });
    assert.equal(reused.createdCa, false);
    assert.equal((await Deno.stat(`${dir}/ca-key.pem`)).mode! & 0o777, 0o600);

    // Final shutdown deletes the key (idempotently); the next start creates a new CA.
    await reused.deleteCaKey();
    await reused.deleteCaKey();
    await assert.rejects(() => Deno.stat(`${dir}/ca-key.pem`), Deno.errors.NotFound);
    assert.equal((await EgressCertificates.loadOrCreate(dir, { now: () => later })).createdCa, true);
  });
});

async function withOtherKey(): Promise<string> {
  const pair = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const b64 = btoa(String.fromCharCode(...der)).match(/.{1,64}/g)!.join("\n");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

Deno.test("leaves: DNS SAN or IP SAN, shared key, LRU-bounded cache, shared concurrent minting", async () => {
  await withStateDir(async (dir) => {
    const certs = await EgressCertificates.loadOrCreate(dir, { cacheSize: 3 });
    const [a1, a2, a3] = await Promise.all([
      certs.leafFor("a.example.test"),
      certs.leafFor("A.Example.Test."),
      certs.leafFor("a.example.test"),
    ]);
    assert.equal(certs.minted, 1, "concurrent requests for one name share one mint");
    assert.equal(a1, a2);
    assert.equal(a1, a3);
    // forge cannot read ECDSA certificates; node:crypto's X509Certificate can.
    const cert = new X509Certificate(a1.certPem);
    const ca = new X509Certificate(certs.caCertPem);
    assert.equal(cert.subjectAltName, "DNS:a.example.test");
    // (serverAuth EKU is checked by `openssl verify -purpose sslserver` below.)
    assert.deepEqual(cert.keyUsage, ["DigitalSignature"], "ECDSA leaf: digitalSignature only");
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(ca));
    assert.ok(cert.verify(ca.publicKey));
    assert.equal(cert.publicKey.asymmetricKeyType, "ec");
    assert.ok(new Date(cert.validTo).getTime() <= certs.caNotAfter.getTime(), "leaf never outlives the CA");

    const ip = await certs.leafFor("10.1.2.3");
    assert.equal(new X509Certificate(ip.certPem).subjectAltName, "IP Address:10.1.2.3");
    const v6 = await certs.leafFor("::1");
    assert.equal(new X509Certificate(v6.certPem).subjectAltName, "IP Address:::1");
    const odd = await certs.leafFor("_dmarc.-odd-.example");
    assert.equal(new X509Certificate(odd.certPem).subjectAltName, "DNS:_dmarc.-odd-.example");
    assert.equal(ip.keyPem, a1.keyPem, "one leaf key per run");

    await certs.leafFor("b.example.test");
    await certs.leafFor("c.example.test"); // evicts the older entries, a.example.test among them
    assert.equal(certs.cacheSize, 3);
    const before = certs.minted;
    await certs.leafFor("c.example.test");
    assert.equal(certs.minted, before, "hit");
    await certs.leafFor("a.example.test");
    assert.equal(certs.minted, before + 1, "evicted name is minted again");

    await assert.rejects(() => certs.leafFor("bad name\u0000"), /Cannot mint a certificate/);
    await assert.rejects(() => certs.leafFor(""), /Cannot mint a certificate/);
    assert.equal(certs.cacheSize, 3, "failed mints are not cached");
  });
});

testWhen(
  commandExists(OPENSSL) ? undefined : "needs /usr/bin/openssl (Debian package openssl)",
  "openssl verify accepts the leaves (ECDSA and RSA leaf keys) against ca.pem",
  async () => {
    await withStateDir(async (dir) => {
      for (const leafKeyType of ["ecdsa-p256", "rsa-2048"] as const) {
        const certs = await EgressCertificates.loadOrCreate(dir, { leafKeyType });
        const dns = await certs.leafFor("verify.example.test");
        const ip = await certs.leafFor("192.0.2.7");
        await Deno.writeTextFile(`${dir}/dns.pem`, dns.certPem);
        await Deno.writeTextFile(`${dir}/ip.pem`, ip.certPem);
        const run = async (args: string[]) => {
          const out = await new Deno.Command(OPENSSL, { args, stdout: "piped", stderr: "piped" }).output();
          return {
            code: out.code,
            text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
          };
        };
        const ok = await run([
          "verify",
          "-CAfile",
          `${dir}/ca.pem`,
          "-purpose",
          "sslserver",
          "-verify_hostname",
          "verify.example.test",
          `${dir}/dns.pem`,
        ]);
        assert.equal(ok.code, 0, ok.text);
        const okIp = await run([
          "verify",
          "-CAfile",
          `${dir}/ca.pem`,
          "-verify_ip",
          "192.0.2.7",
          `${dir}/ip.pem`,
        ]);
        assert.equal(okIp.code, 0, okIp.text);
        // The checks can fail: a wrong host name is refused.
        const wrong = await run([
          "verify",
          "-CAfile",
          `${dir}/ca.pem`,
          "-verify_hostname",
          "other.example.test",
          `${dir}/dns.pem`,
        ]);
        assert.notEqual(wrong.code, 0, wrong.text);
      }
    });
  },
);

Deno.test("Deno's TLS client completes a handshake against node:tls with the leaf chosen per SNI", async () => {
  await withStateDir(async (dir) => {
    const certs = await EgressCertificates.loadOrCreate(dir);
    const ipLeaf = await certs.leafFor("127.0.0.1");
    const seen: string[] = [];
    const server = tls.createServer({
      key: ipLeaf.keyPem,
      cert: ipLeaf.certPem, // ClientHello without SNI: the IP leaf
      SNICallback: (servername, callback) => {
        seen.push(servername);
        // Deno's node:tls calls this with "" when the client sent no SNI: use the destination IP.
        certs.leafFor(servername || "127.0.0.1").then(
          (leaf) => callback(null, tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem })),
          (error) => callback(error as Error),
        );
      },
    }, (socket) => {
      socket.end(`hello ${(socket as tls.TLSSocket & { servername?: string }).servername || "no-sni"}\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const readAll = async (conn: Deno.Conn) => {
        const chunks: Uint8Array[] = [];
        const buf = new Uint8Array(1024);
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          chunks.push(buf.slice(0, n));
        }
        return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      };
      for (const name of ["one.example.test", "two.example.test"]) {
        const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
        const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [certs.caCertPem] });
        await conn.handshake();
        assert.equal(await readAll(conn), `hello ${name}\n`);
        conn.close();
      }
      // connectTls to an IP literal sends no SNI: the IP SAN leaf must satisfy verification.
      const byIp = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.caCertPem] });
      await byIp.handshake();
      assert.equal(await readAll(byIp), "hello no-sni\n");
      byIp.close();
      // Without trusting the egress CA the handshake fails: the test can fail.
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
      const untrusted = await Deno.startTls(tcp, { hostname: "one.example.test" });
      await assert.rejects(() => untrusted.handshake());
      try {
        untrusted.close();
      } catch {
        // already closed by the failed handshake
      }
      assert.deepEqual(seen.slice(0, 2), ["one.example.test", "two.example.test"]);
      assert.ok(certs.minted >= 3);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

Deno.test("mint time per leaf (measured, printed) stays in the WebCrypto range", async () => {
  await withStateDir(async (dir) => {
    for (const leafKeyType of ["ecdsa-p256", "rsa-2048"] as const) {
      const started = performance.now();
      const certs = await EgressCertificates.loadOrCreate(dir, { leafKeyType });
      const setupMs = performance.now() - started;
      const times: number[] = [];
      for (let i = 0; i < 40; i++) times.push((await certs.leafFor(`m${i}.example.test`)).mintMs);
      times.sort((a, b) => a - b);
      const median = times[times.length >> 1];
      const p90 = times[Math.floor(times.length * 0.9)];
      console.log(
        `mint ${leafKeyType}: median ${median.toFixed(2)} ms, p90 ${p90.toFixed(2)} ms; ` +
          `CA load + leaf keygen ${setupMs.toFixed(1)} ms`,
      );
      // Pure-JS forge signing is ~28 ms; anything near that means WebCrypto is not in use.
      assert.ok(median < 15, `median mint ${median} ms`);
    }
  });
});
