// The NFQUEUE consumer (src/udp/nfqueue.ts) with the UDP policy handler (src/udp/udp_policy.ts) as
// a daemon part. The queue has no bypass: while this part is not running, queued UDP is dropped.

import { DEFAULT_MARKS } from "../../netfilter/rules.ts";
import { isLocalAddress } from "../../kernel/attribution.ts";
import { NfqueueConsumer } from "../../udp/nfqueue.ts";
import { createUdpPacketHandler, procDescriber } from "../../udp/udp_policy.ts";
import { FlowLogLimiter } from "../../udp/flow_table.ts";
import type { PartContext, RunningPart } from "../parts.ts";
import { sharedRendezvous } from "./shared.ts";

export function startUdpPart(context: PartContext): Promise<RunningPart> {
  const handler = createUdpPacketHandler({
    getEnforcer: () => context.policy.enforcer,
    getPolicy: () => context.policy.policy,
    attribution: context.attribution,
    // synchronous /proc description: the packet handler runs inside the receive loop
    describe: procDescriber(),
    rendezvous: sharedRendezvous(context),
    log: context.connectionLog,
    oplog: context.oplog,
    marks: { dns: DEFAULT_MARKS.dns, allowedFlow: DEFAULT_MARKS.allowedFlow },
    flowLimiter: new FlowLogLimiter(),
    isLocal: isLocalAddress,
    audit: context.config.audit,
  });
  const consumer = NfqueueConsumer.open({ queueNum: context.config.queueNum, onPacket: handler });
  let failed = false;
  consumer.finished.catch((error) => {
    failed = true;
    context.oplog.error(`NFQUEUE consumer stopped: ${(error as Error).message} (queued UDP is dropped)`);
  });
  return Promise.resolve({
    name: "NFQUEUE consumer",
    close: async () => {
      await consumer.close();
    },
    healthy: () => !failed,
    counters: () => ({
      allowed: handler.counters.allowed,
      denied: handler.counters.denied,
      errors: handler.counters.error + consumer.counters.handlerErrors,
    }),
  });
}
