// GitHub token tagging (extras.md §2): tells whether a request carried the job's GitHub token or
// the OIDC request token, so its log line gets `github_token: true`. Pure: no Deno, no node:.
//
// Only the configured tokens are kept (as bytes, for the comparison); header values are compared
// and dropped, never stored or returned.

import { splitUrl } from "./purl.ts";

export type TokenTaggerOptions = {
  /** The configured GitHub token (`EGRESS_GITHUB_TOKEN`). */
  githubToken?: string;
  /** `ACTIONS_ID_TOKEN_REQUEST_URL`. */
  idTokenRequestUrl?: string;
  /** `ACTIONS_ID_TOKEN_REQUEST_TOKEN`. */
  idTokenRequestToken?: string;
};

/** Request headers as the proxy has them: a Headers object, a record, or name/value pairs. */
export type RequestHeaders =
  | Headers
  | Record<string, string | string[] | undefined>
  | ReadonlyArray<readonly [string, string]>;

export type TokenTagger = (url: string, headers: RequestHeaders) => boolean;

const GITHUB_API_HOSTS = new Set(["api.github.com", "uploads.github.com"]);

/** A tagger for these tokens; one that never tags when none is configured. */
export function createTokenTagger(options: TokenTaggerOptions): TokenTagger {
  const encoder = new TextEncoder();
  const githubToken = nonEmpty(options.githubToken) ? encoder.encode(options.githubToken) : undefined;
  const idUrl = nonEmpty(options.idTokenRequestUrl) ? options.idTokenRequestUrl : undefined;
  const idToken = nonEmpty(options.idTokenRequestToken) && idUrl !== undefined
    ? encoder.encode(options.idTokenRequestToken)
    : undefined;
  if (githubToken === undefined && idToken === undefined) return () => false;

  return (url: string, headers: RequestHeaders): boolean => {
    const onApi = githubToken !== undefined && GITHUB_API_HOSTS.has(splitUrl(url)?.host ?? "");
    const onIdUrl = idToken !== undefined && url.startsWith(idUrl!);
    if (!onApi && !onIdUrl) return false;
    for (const value of authorizationValues(headers)) {
      const credentials = splitAuthorization(value);
      if (credentials === undefined) continue;
      const credential = encoder.encode(credentials.credential);
      if (onApi && (credentials.scheme === "token" || credentials.scheme === "bearer")) {
        if (constantTimeEqual(credential, githubToken!)) return true;
      }
      if (onIdUrl && credentials.scheme === "bearer" && constantTimeEqual(credential, idToken!)) return true;
    }
    return false;
  };
}

/**
 * Byte equality whose time depends only on the lengths, not on where the bytes differ. The
 * configured token's length is not secret-critical (GitHub token formats are public).
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  const length = Math.max(a.length, b.length);
  let difference = a.length ^ b.length;
  for (let i = 0; i < length; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return difference === 0;
}

function nonEmpty(value: string | undefined): value is string {
  return value !== undefined && value !== "";
}

function authorizationValues(headers: RequestHeaders): string[] {
  if (typeof Headers !== "undefined" && headers instanceof Headers) {
    const value = headers.get("authorization");
    return value === null ? [] : [value];
  }
  const values: string[] = [];
  if (Array.isArray(headers)) {
    for (const [name, value] of headers as ReadonlyArray<readonly [string, string]>) {
      if (name.toLowerCase() === "authorization") values.push(value);
    }
    return values;
  }
  for (const [name, value] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (name.toLowerCase() !== "authorization" || value === undefined) continue;
    if (Array.isArray(value)) values.push(...value);
    else values.push(value);
  }
  return values;
}

/** `Scheme credential` → lower-cased scheme and the credential (surrounding blanks removed). */
function splitAuthorization(value: string): { scheme: string; credential: string } | undefined {
  const match = /^[ \t]*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)[ \t]+(.*?)[ \t]*$/.exec(value);
  if (match === null || match[2] === "") return undefined;
  return { scheme: match[1].toLowerCase(), credential: match[2] };
}
