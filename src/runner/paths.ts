// Every system path the runner integration touches, relative to a root that tests set to a
// temporary directory (EGRESS_TEST_ROOT), so tests never touch the machine's own sudoers, CA
// store, runc or sysctls. Pure: no Deno API.

/** Logical locations (what a process on the runner, or in a container, sees). */
export const CA_SHARED_PATH = "/usr/local/share/egress/ca.pem";
export const SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
export const LOCAL_CA_CERT = "/usr/local/share/ca-certificates/egress.crt";
export const SUDOERS_RUNNER = "/etc/sudoers.d/runner";
export const RUNC = "/usr/bin/runc";
export const RUNC_WRAPPER_SCRIPT = "/usr/local/share/egress/runc-wrapper.cjs";
export const USERNS_CLONE_SYSCTL = "/proc/sys/kernel/unprivileged_userns_clone";
export const MAX_USER_NAMESPACES_SYSCTL = "/proc/sys/user/max_user_namespaces";
/** Root-owned copies of the daemon's code, Deno and module cache (action pre), one per version. */
export const LIB_DIR = "/usr/local/lib/egress";

export type SystemPaths = {
  /** "" on a real runner, else the test root every path below lives in */
  root: string;
  sudoersRunner: string;
  caShared: string;
  systemCaBundle: string;
  localCaCert: string;
  runc: string;
  runcReal: string;
  runcWrapperScript: string;
  usernsClone: string;
  maxUserNamespaces: string;
  libDir: string;
};

/** Paths under `root` ("" = the real system). */
export function systemPaths(root = ""): SystemPaths {
  const base = root.replace(/\/+$/, "");
  const at = (path: string) => `${base}${path}`;
  return {
    root: base,
    sudoersRunner: at(SUDOERS_RUNNER),
    caShared: at(CA_SHARED_PATH),
    systemCaBundle: at(SYSTEM_CA_BUNDLE),
    localCaCert: at(LOCAL_CA_CERT),
    runc: at(RUNC),
    runcReal: at(`${RUNC}.real`),
    runcWrapperScript: at(RUNC_WRAPPER_SCRIPT),
    usernsClone: at(USERNS_CLONE_SYSCTL),
    maxUserNamespaces: at(MAX_USER_NAMESPACES_SYSCTL),
    libDir: at(LIB_DIR),
  };
}

export const CA_VARIABLES = [
  "NODE_EXTRA_CA_CERTS",
  "SSL_CERT_FILE",
  "REQUESTS_CA_BUNDLE",
  "AWS_CA_BUNDLE",
  "HEX_CACERTS_PATH",
] as const;

/**
 * The CA variables exported to later steps (runner.md §6): Node gets the egress CA as an extra
 * certificate, the others the system bundle the CA was appended to.
 */
export function caEnvironment(paths: SystemPaths = systemPaths()): Record<string, string> {
  return {
    NODE_EXTRA_CA_CERTS: paths.caShared,
    SSL_CERT_FILE: paths.systemCaBundle,
    REQUESTS_CA_BUNDLE: paths.systemCaBundle,
    AWS_CA_BUNDLE: paths.systemCaBundle,
    HEX_CACERTS_PATH: paths.systemCaBundle,
  };
}
