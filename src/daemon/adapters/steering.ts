// SteeringPart over src/netfilter/iptables.ts, in the daemon's own network namespace.

import {
  findLeftovers,
  flushUdpConntrack,
  installSteering,
  removeSteering,
  revokeFastPath,
} from "../../netfilter/iptables.ts";
import type { SteeringPart } from "../parts.ts";

export function createSteering(): SteeringPart {
  return {
    async removeLeftovers(log) {
      const leftovers = await findLeftovers();
      if (leftovers.length === 0) return 0;
      log(
        `steering chains of an earlier run: ${
          leftovers.map((left) => `${left.table} ${left.chain}`).join(", ")
        }`,
      );
      const report = await removeSteering({ log });
      return report.chains;
    },
    async install(settings, log) {
      await installSteering(
        {
          proxyPort: settings.proxyPort,
          dnsPort: settings.dnsPort,
          queueNum: settings.queueNum,
          exemptCgroupPath: settings.exemptCgroupPath,
          // systemd-resolved's port-53 traffic is exempt only where its cgroup exists.
          resolvedCgroupPath: "/system.slice/systemd-resolved.service",
        },
        { log },
      );
    },
    async remove(log) {
      const report = await removeSteering({ log });
      log(`removed ${report.jumps} jumps and ${report.chains} chains`);
    },
    async flushUdpConntrack() {
      await flushUdpConntrack();
    },
    async revokeFastPath() {
      await revokeFastPath();
    },
  };
}
