// Secret scrubbing for every string egress writes to a log (events.md §4). Pure: no Deno, no node:.

export const MASK = "***";

/** Token shapes GitHub issues; matched anywhere in a string. */
const TOKEN_PATTERNS = /gh[opsur]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}/g;

/** `Authorization:`-style headers inside an argv element (e.g. `-HAuthorization: Bearer x`). */
const CREDENTIAL_HEADER = /((?:proxy-)?authorization)(\s*:\s*)(\S+)?(.*)$/is;
const COOKIE_HEADER = /((?:set-)?cookie)(\s*:\s*)(.*)$/is;

export type ScrubOptions = {
  /**
   * Literal secret values to hide wherever they appear: the configured GitHub token,
   * ACTIONS_ID_TOKEN_REQUEST_TOKEN, ACTIONS_RUNTIME_TOKEN. Empty values are ignored.
   */
  secrets?: Array<string | undefined>;
};

export type Scrubber = {
  /** Any logged string: URL, host, exe, cgroup, operational log message. */
  text(value: string): string;
  /** One argv element: as text(), and a credential header keeps only its scheme. */
  argument(value: string): string;
  argv(values: readonly string[]): string[];
};

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function createScrubber(options: ScrubOptions = {}): Scrubber {
  const secrets = [...new Set((options.secrets ?? []).filter((s): s is string => !!s && s.length > 0))]
    // Longest first so a secret that contains another is hidden whole.
    .sort((a, b) => b.length - a.length);
  const literal = secrets.length > 0 ? new RegExp(secrets.map(escapeRegExp).join("|"), "g") : undefined;

  const text = (value: string): string => {
    let out = literal ? value.replace(literal, MASK) : value;
    out = out.replace(TOKEN_PATTERNS, MASK);
    return out;
  };
  const argument = (value: string): string => {
    const credential = CREDENTIAL_HEADER.exec(value);
    if (credential) {
      const prefix = value.slice(0, credential.index);
      const [, name, separator, first, rest] = credential;
      // "Bearer x" keeps "Bearer"; a bare value (no scheme) is hidden entirely.
      const hasScheme = first !== undefined && /^\s+\S/.test(rest);
      return text(prefix) + name + separator + (hasScheme ? `${text(first)} ${MASK}` : MASK);
    }
    const cookie = COOKIE_HEADER.exec(value);
    if (cookie) return text(value.slice(0, cookie.index)) + cookie[1] + cookie[2] + MASK;
    return text(value);
  };
  return { text, argument, argv: (values) => values.map(argument) };
}

/** Scrubber that knows only the token patterns (no configured secrets). */
export const defaultScrubber: Scrubber = createScrubber();
