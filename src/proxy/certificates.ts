// egress's interception CA and the leaf certificates it mints per name (runner.md §6).
// Certificates are laid out with node-forge; keys and signatures come from WebCrypto, which is
// native: forge's pure-JS RSA signing costs ~28 ms per leaf, WebCrypto ~1–2 ms (ARCHITECTURE.md).
// The CA key is RSA-2048 (widest client support); the one leaf key per run is ECDSA P-256 by
// default (cheap handshakes), RSA-2048 on request.

import forge from "node-forge";

const DAY_MS = 24 * 60 * 60 * 1000;
const HOUR_MS = 60 * 60 * 1000;
export const CA_VALIDITY_MS = 7 * DAY_MS;
export const CA_BACKDATE_MS = HOUR_MS;
/** A stored CA with less validity left than this is replaced at start. */
const CA_MIN_REMAINING_MS = HOUR_MS;
export const LEAF_CACHE_SIZE = 1000;

const RSA_SIGN: RsaHashedKeyGenParams = {
  name: "RSASSA-PKCS1-v1_5",
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: "SHA-256",
};
const EC_KEY: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };

export type LeafKeyType = "ecdsa-p256" | "rsa-2048";

export type LeafCertificate = {
  /** the lower-case host name or IP literal the certificate is for */
  name: string;
  certPem: string;
  /** PKCS#8 PEM of the shared leaf key */
  keyPem: string;
  notAfter: Date;
  /** milliseconds it took to mint */
  mintMs: number;
};

export type CertificatesOptions = {
  leafKeyType?: LeafKeyType;
  cacheSize?: number;
  now?: () => Date;
};

// ---------------------------------------------------------------- small helpers

function toBinary(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return s;
}

function fromBinary(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function pem(label: string, der: Uint8Array): string {
  const b64 = forge.util.encode64(toBinary(der));
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function pemBody(text: string, label: string): Uint8Array<ArrayBuffer> | undefined {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(text);
  if (!m) return undefined;
  try {
    return fromBinary(forge.util.decode64(m[1].replace(/\s+/g, "")));
  } catch {
    return undefined;
  }
}

function randomSerialHex(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  // Positive and minimal in DER: top bit clear, first byte not zero.
  bytes[0] = (bytes[0] & 0x7f) || 1;
  return forge.util.bytesToHex(toBinary(bytes));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function exportSpki(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey("spki", key));
}

/** forge's RSA public key from SPKI DER (forge needs one to lay out a certificate). */
function forgeRsaPublicKey(spki: Uint8Array): forge.pki.rsa.PublicKey {
  return forge.pki.publicKeyFromAsn1(forge.asn1.fromDer(toBinary(spki))) as forge.pki.rsa.PublicKey;
}

/**
 * Signs `cert` with the CA key through WebCrypto. When `spki` is given it replaces the
 * SubjectPublicKeyInfo forge laid out (forge only knows RSA keys; the leaf may be ECDSA).
 */
async function signCertificate(
  cert: forge.pki.Certificate,
  caKey: CryptoKey,
  spki?: Uint8Array,
): Promise<Uint8Array> {
  const oid = forge.pki.oids.sha256WithRSAEncryption;
  cert.signatureOid = oid;
  // deno-lint-ignore no-explicit-any
  (cert as any).siginfo.algorithmOid = oid;
  const tbs = forge.pki.getTBSCertificate(cert);
  if (spki) (tbs.value as forge.asn1.Asn1[])[6] = forge.asn1.fromDer(toBinary(spki));
  const tbsDer = fromBinary(forge.asn1.toDer(tbs).getBytes());
  const signature = new Uint8Array(await crypto.subtle.sign("RSASSA-PKCS1-v1_5", caKey, tbsDer));
  // deno-lint-ignore no-explicit-any
  (cert as any).tbsCertificate = tbs;
  cert.signature = toBinary(signature);
  return fromBinary(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes());
}

/** Same alphabet as the ClientHello parser accepts for SNI (LDH plus `_`), so any SNI it passes can be minted. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function isIpv6Literal(name: string): boolean {
  return name.includes(":") && /^[0-9a-f:.]+$/.test(name) && forge.util.bytesFromIP(name) != null;
}

type AltName = { type: number; value?: string; ip?: string };

/** DNS SAN for a host name, IP SAN for an IP literal, undefined for anything else. */
function subjectAltNameFor(name: string): AltName | undefined {
  if (IPV4.test(name) || isIpv6Literal(name)) return { type: 7, ip: name };
  if (HOST_NAME.test(name)) return { type: 2, value: name };
  return undefined;
}

// ---------------------------------------------------------------- CA

type LoadedCa = { cert: forge.pki.Certificate; key: CryptoKey; certPem: string; created: boolean };

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read ${path}: ${(error as Error).message}`);
  }
}

/** Reads the stored CA; undefined when absent, incomplete, expired, or not egress's. */
async function loadStoredCa(keyPath: string, certPath: string, now: Date): Promise<LoadedCa | undefined> {
  const [keyText, certText] = await Promise.all([readText(keyPath), readText(certPath)]);
  if (keyText === undefined || certText === undefined) return undefined;
  const keyDer = pemBody(keyText, "PRIVATE KEY");
  if (!keyDer) return undefined;
  let cert: forge.pki.Certificate;
  try {
    cert = forge.pki.certificateFromPem(certText);
  } catch {
    return undefined;
  }
  const cn = cert.subject.getField("CN")?.value;
  if (typeof cn !== "string" || !/^egress CA [0-9a-f]{8}$/.test(cn)) return undefined;
  const basic = cert.getExtension("basicConstraints") as { cA?: boolean } | null;
  if (!basic?.cA) return undefined;
  if (cert.validity.notBefore.getTime() > now.getTime()) return undefined;
  if (cert.validity.notAfter.getTime() - now.getTime() < CA_MIN_REMAINING_MS) return undefined;
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("pkcs8", keyDer, RSA_SIGN, true, ["sign"]);
  } catch {
    return undefined;
  }
  // The key must belong to the certificate: compare the public halves.
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const publicKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "RSA", n: jwk.n, e: jwk.e, alg: "RS256", ext: true },
    RSA_SIGN,
    true,
    ["verify"],
  );
  const certSpki = fromBinary(forge.asn1.toDer(forge.pki.publicKeyToAsn1(cert.publicKey)).getBytes());
  if (!sameBytes(await exportSpki(publicKey), certSpki)) return undefined;
  return { cert, key, certPem: certText, created: false };
}

async function createCa(now: Date): Promise<{ ca: LoadedCa; keyPem: string }> {
  const pair = await crypto.subtle.generateKey(RSA_SIGN, true, ["sign", "verify"]);
  const spki = await exportSpki(pair.publicKey);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forgeRsaPublicKey(spki);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = new Date(now.getTime() - CA_BACKDATE_MS);
  cert.validity.notAfter = new Date(now.getTime() - CA_BACKDATE_MS + CA_VALIDITY_MS);
  const suffix = forge.util.bytesToHex(toBinary(crypto.getRandomValues(new Uint8Array(4))));
  const attrs = [{ shortName: "CN", value: `egress CA ${suffix}` }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  const der = await signCertificate(cert, pair.privateKey);
  const keyDer = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return {
    ca: { cert, key: pair.privateKey, certPem: pem("CERTIFICATE", der), created: true },
    keyPem: pem("PRIVATE KEY", keyDer),
  };
}

/** Writes via a temporary file and rename, so a crash never leaves half a key or certificate. */
async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(temp, text, { mode, createNew: true });
    await Deno.chmod(temp, mode); // the umask may have narrowed or widened nothing; be exact
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw new Error(`Cannot write ${path}: ${(error as Error).message}`);
  }
}

// ---------------------------------------------------------------- certificates

export class EgressCertificates {
  readonly caCertPath: string;
  readonly caKeyPath: string;
  /** PEM of the CA certificate (what clients must trust). */
  readonly caCertPem: string;
  readonly caCommonName: string;
  /** true when this start created the CA, false when it reused a stored one */
  readonly createdCa: boolean;
  readonly leafKeyType: LeafKeyType;
  readonly #caCert: forge.pki.Certificate;
  readonly #caKey: CryptoKey;
  readonly #caKeyId: string;
  readonly #leafSpki: Uint8Array;
  readonly #leafKeyPem: string;
  readonly #cacheSize: number;
  readonly #now: () => Date;
  /** LRU: Map iteration order is insertion order; a hit re-inserts. Holds in-flight mints too. */
  readonly #cache = new Map<string, Promise<LeafCertificate>>();
  #mints = 0;

  private constructor(
    paths: { keyPath: string; certPath: string },
    ca: LoadedCa,
    leaf: { spki: Uint8Array; keyPem: string; type: LeafKeyType },
    options: CertificatesOptions,
  ) {
    this.caKeyPath = paths.keyPath;
    this.caCertPath = paths.certPath;
    this.caCertPem = ca.certPem;
    this.#caCert = ca.cert;
    this.#caKey = ca.key;
    this.caCommonName = String(ca.cert.subject.getField("CN").value);
    this.createdCa = ca.created;
    // deno-lint-ignore no-explicit-any
    this.#caKeyId = (ca.cert as any).generateSubjectKeyIdentifier().getBytes();
    this.#leafSpki = leaf.spki;
    this.#leafKeyPem = leaf.keyPem;
    this.leafKeyType = leaf.type;
    this.#cacheSize = Math.max(1, options.cacheSize ?? LEAF_CACHE_SIZE);
    this.#now = options.now ?? (() => new Date());
  }

  /**
   * Loads the CA from `stateDir` (`ca-key.pem` 0600, `ca.pem` 0644) or creates it there when it
   * is missing, unusable or about to expire; generates this run's leaf key.
   */
  static async loadOrCreate(
    stateDir: string,
    options: CertificatesOptions = {},
  ): Promise<EgressCertificates> {
    const now = (options.now ?? (() => new Date()))();
    const keyPath = `${stateDir}/ca-key.pem`;
    const certPath = `${stateDir}/ca.pem`;
    try {
      // 0755: ca.pem (0644) must stay readable; the key is protected by its own 0600.
      await Deno.mkdir(stateDir, { recursive: true, mode: 0o755 });
    } catch (error) {
      throw new Error(`Cannot create state directory ${stateDir}: ${(error as Error).message}`);
    }
    let ca = await loadStoredCa(keyPath, certPath, now);
    if (ca) {
      // The key stays private even if something widened its mode since it was written.
      await Deno.chmod(keyPath, 0o600);
    } else {
      const created = await createCa(now);
      // Key first: a certificate on disk must never lack its key.
      await writeAtomic(keyPath, created.keyPem, 0o600);
      await writeAtomic(certPath, created.ca.certPem, 0o644);
      ca = created.ca;
    }
    const type = options.leafKeyType ?? "ecdsa-p256";
    const pair = type === "ecdsa-p256"
      ? await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"])
      : await crypto.subtle.generateKey(RSA_SIGN, true, ["sign", "verify"]);
    const spki = await exportSpki(pair.publicKey);
    const keyPem = pem(
      "PRIVATE KEY",
      new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    );
    return new EgressCertificates({ keyPath, certPath }, ca, { spki, keyPem, type }, options);
  }

  /**
   * Deletes the CA key (final shutdown, runner.md §6); ca.pem stays for whoever still trusts it.
   * Idempotent. Leaves already minted keep working until the process ends.
   */
  async deleteCaKey(): Promise<void> {
    try {
      await Deno.remove(this.caKeyPath);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new Error(`Cannot delete ${this.caKeyPath}: ${(error as Error).message}`);
      }
    }
  }

  /** CA validity (leaves never outlive it). */
  get caNotAfter(): Date {
    return this.#caCert.validity.notAfter;
  }

  /** Certificates minted so far (cache misses). */
  get minted(): number {
    return this.#mints;
  }

  get cacheSize(): number {
    return this.#cache.size;
  }

  /**
   * The leaf for a host name (DNS SAN) or IPv4/IPv6 literal (IP SAN, for a ClientHello without
   * SNI). Cached (LRU); concurrent calls for one name share a single mint.
   */
  leafFor(name: string): Promise<LeafCertificate> {
    const key = name.toLowerCase().replace(/\.$/, "");
    const cached = this.#cache.get(key);
    if (cached) {
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached.then((leaf) => {
        if (leaf.notAfter.getTime() - this.#now().getTime() > HOUR_MS) return leaf;
        if (this.#cache.get(key) === cached) this.#cache.delete(key);
        return this.leafFor(key);
      });
    }
    const altName = subjectAltNameFor(key);
    if (!altName) {
      // Refused before touching the cache, so bad names never evict good leaves.
      return Promise.reject(
        new Error(`Cannot mint a certificate for ${JSON.stringify(name)}: not a host name or IP address`),
      );
    }
    const minting = this.#mint(key, altName);
    this.#cache.set(key, minting);
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
    // A failed mint is not cached: the next request tries again.
    minting.catch(() => {
      if (this.#cache.get(key) === minting) this.#cache.delete(key);
    });
    return minting;
  }

  async #mint(name: string, altName: AltName): Promise<LeafCertificate> {
    const started = performance.now();
    const now = this.#now();
    const cert = forge.pki.createCertificate();
    // Placeholder so forge can lay out the TBS; signCertificate swaps in the real leaf SPKI.
    cert.publicKey = this.#caCert.publicKey;
    cert.serialNumber = randomSerialHex();
    const caFrom = this.#caCert.validity.notBefore.getTime();
    const caTo = this.#caCert.validity.notAfter.getTime();
    cert.validity.notBefore = new Date(Math.max(caFrom, now.getTime() - CA_BACKDATE_MS));
    cert.validity.notAfter = new Date(Math.min(caTo, now.getTime() + CA_VALIDITY_MS));
    cert.setSubject(name.length <= 64 ? [{ shortName: "CN", value: name }] : []);
    cert.setIssuer(this.#caCert.subject.attributes);
    cert.setExtensions([
      { name: "basicConstraints", cA: false, critical: true },
      {
        name: "keyUsage",
        digitalSignature: true,
        keyEncipherment: this.leafKeyType === "rsa-2048",
        critical: true,
      },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [altName] },
      { name: "authorityKeyIdentifier", keyIdentifier: this.#caKeyId },
    ]);
    const der = await signCertificate(cert, this.#caKey, this.#leafSpki);
    this.#mints++;
    return {
      name,
      certPem: pem("CERTIFICATE", der),
      keyPem: this.#leafKeyPem,
      notAfter: cert.validity.notAfter,
      mintMs: performance.now() - started,
    };
  }
}
