// The process fields of a connection (events.md §3): who made it, as /proc, the Docker cgroup and
// the trusted GitHub context tell. One shape for the /proc describer, the proxy, the DNS/UDP path,
// the connection log and its replay. Pure: types only, no runtime API.

/** pid, exe, cmdline, cgroup, image, step, action; a field is absent when it is not known. */
export type ProcessFields = {
  pid: number;
  exe?: string;
  cmdline?: string[];
  cgroup?: string;
  image?: string;
  step?: string;
  action?: string;
};
