// Built-in runner rules (policy.md §12). Pure: no Deno, no node:.

/** cgroup of the hosted runner's agent: the default attribute of every rule with `runner: true`. */
export const RUNNER_CGROUP = "/system.slice/hosted-compute-agent.service";

/**
 * Prepended with `runner: true` (rules get line 0 and indices 0–4): 0 the systemd-resolved stub,
 * 1 the Azure wireserver and 2 IMDS (Azure agent only), 3 the results receiver, 4 the watchdog.
 */
export const RUNNER_BUILTIN_TEXT = `127.0.0.53:53/udp
[cgroup=/azure.slice/walinuxagent.service]
168.63.129.16:80|32526
169.254.169.254:80
[]
results-receiver.actions.githubusercontent.com
[exe=/tmp/provjobd*]
hosted-compute-watchdog-prod-*.githubapp.com
[]
`;
