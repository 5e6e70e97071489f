// NFQUEUE consumer against the real kernel. Everything runs inside a network namespace the test
// creates (and removes): the queue rule, the consumer (a child Deno process under nsenter) and the
// UDP sender/receiver. Verdicts are chosen by the first data byte (see nfqueue_agent.ts).

import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import { NfqueueConsumer, parseNfqueueStats } from "../../src/udp/nfqueue.ts";
import {
  type ConsumerReport,
  nfqueueTestRequirements,
  type TestNetns,
  uniqueQueueNum,
  withConsumer,
  withNetns,
} from "./netns_helpers.ts";

const PORT = 9999;
const skip = nfqueueTestRequirements();

async function queueUdp(netns: TestNetns, queueNum: number): Promise<void> {
  await netns.iptables(
    "-t",
    "mangle",
    "-A",
    "OUTPUT",
    "-p",
    "udp",
    "--dport",
    String(PORT),
    "-j",
    "NFQUEUE",
    "--queue-num",
    String(queueNum),
  );
}

Deno.test("nfqueue open: rejects bad options before touching the kernel", () => {
  const onPacket = () => ({ verdict: "drop" as const });
  assert.throws(() => NfqueueConsumer.open({ queueNum: 70000, onPacket }), /Cannot open nfqueue: queueNum/);
  assert.throws(() => NfqueueConsumer.open({ queueNum: 1, copyRange: 0, onPacket }), /copyRange must be/);
  assert.throws(
    () => NfqueueConsumer.open({ queueNum: 1, onPacket: undefined as never }),
    /onPacket must be a function/,
  );
});

Deno.test("nfqueue stats: parses /proc/net/netfilter/nfnetlink_queue lines", () => {
  const text = "   42  12345     3 2 65531     7     1      900 1\n garbage line\n    5 1 0 2 100 0 0 10 1\n";
  assert.deepEqual(parseNfqueueStats(text), [
    {
      queueNum: 42,
      portId: 12345,
      waiting: 3,
      copyMode: 2,
      copyRange: 65531,
      queueDropped: 7,
      userDropped: 1,
      idSequence: 900,
    },
    {
      queueNum: 5,
      portId: 1,
      waiting: 0,
      copyMode: 2,
      copyRange: 100,
      queueDropped: 0,
      userDropped: 0,
      idSequence: 10,
    },
  ]);
});

testWhen(skip, "nfqueue: accepted packets arrive, dropped ones and handler failures don't", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await queueUdp(netns, queueNum);
    await withConsumer(netns, queueNum, async (consumer) => {
      const traffic = await netns.traffic(PORT, 80, "ADXB");
      assert.equal(traffic.sent, 80);
      assert.deepEqual(traffic.received, { A: 20 }, "only the accepted letter arrives");
      const report = await consumer.ask<ConsumerReport>("stats");
      assert.equal(report.counters.received, 80);
      assert.equal(report.counters.accepted, 20);
      assert.equal(report.counters.dropped, 60);
      assert.equal(report.counters.handlerErrors, 40, "X throws and B returns an invalid verdict");
      assert.equal(report.counters.verdictRejected, 0);
      assert.equal(report.kernel?.waiting, 0, "no packet is left waiting for a verdict");
      assert.equal(report.fatal, null);
    });
  });
});

testWhen(skip, "nfqueue: packet ids are read in the right byte order, so verdicts take effect", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await queueUdp(netns, queueNum);
    await withConsumer(netns, queueNum, async (consumer) => {
      const traffic = await netns.traffic(PORT, 30, "A");
      assert.equal(traffic.receivedTotal, 30);
      const report = await consumer.ask<ConsumerReport>("stats");
      // The kernel numbers a fresh queue's packets 1, 2, 3, …: a byte-swapped read would give
      // 0x01000000, 0x02000000, … and the kernel would refuse every verdict.
      assert.deepEqual(report.firstIds, [1, 2, 3, 4, 5]);
      assert.equal(report.kernel?.idSequence, 30);
      assert.equal(report.kernel?.waiting, 0);
      assert.equal(report.counters.verdictRejected, 0);
    });
  });
});

testWhen(
  skip,
  "nfqueue: a verdict's mark is visible to later rules, and repeat re-runs the hook",
  async () => {
    await withNetns(async (netns) => {
      const queueNum = uniqueQueueNum();
      await queueUdp(netns, queueNum);
      // Counting rules (no target) after the queue.
      await netns.iptables(
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-p",
        "udp",
        "--dport",
        String(PORT),
        "-m",
        "mark",
        "--mark",
        "0x42",
      );
      await netns.iptables(
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-p",
        "udp",
        "--dport",
        String(PORT),
        "-m",
        "mark",
        "--mark",
        "0x100",
      );
      await withConsumer(netns, queueNum, async (consumer) => {
        const traffic = await netns.traffic(PORT, 30, "AMR");
        assert.deepEqual(traffic.received, { A: 10, M: 10, R: 10 });
        assert.equal(await netns.ruleCounter("mangle", "POSTROUTING", "mark match 0x42"), 10);
        assert.equal(await netns.ruleCounter("mangle", "POSTROUTING", "mark match 0x100"), 10);
        const report = await consumer.ask<ConsumerReport>("stats");
        // Each R packet is queued twice: repeat (mark 0x100) sends it through mangle OUTPUT again,
        // where the consumer sees the new mark and accepts.
        assert.equal(report.byLetter.R, 20);
        assert.equal(report.counters.repeated, 10);
        assert.equal(report.counters.received, 40);
        assert.equal(report.counters.accepted, 30);
      });
    });
  },
);

testWhen(skip, "nfqueue: a burst of 10,000 datagrams gets a verdict for every packet", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await queueUdp(netns, queueNum);
    await withConsumer(netns, queueNum, async (consumer) => {
      const traffic = await netns.traffic(PORT, 10_000, "A");
      assert.equal(traffic.sent, 10_000);
      const report = await consumer.ask<ConsumerReport>("stats");
      assert.equal(report.counters.received, 10_000);
      assert.equal(report.counters.accepted, 10_000);
      assert.equal(report.counters.enobufs, 0);
      assert.equal(report.kernel?.queueDropped, 0);
      assert.equal(report.kernel?.userDropped, 0);
      assert.equal(report.kernel?.waiting, 0);
      assert.equal(traffic.receiveBufferErrors, 0, "the receiving socket kept up");
      assert.equal(traffic.receivedTotal, 10_000, "every accepted datagram reached the receiver");
    });
  });
});

testWhen(skip, "nfqueue: no bypass — without a consumer, or after close, packets are dropped", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await queueUdp(netns, queueNum);
    const before = await netns.traffic(PORT, 10, "A");
    assert.equal(before.receivedTotal, 0, "nothing passes before a consumer binds the queue");
    await withConsumer(netns, queueNum, async (consumer) => {
      const during = await netns.traffic(PORT, 10, "A");
      assert.equal(during.receivedTotal, 10);
      const closed = await consumer.ask<ConsumerReport>("close");
      assert.equal(closed.kernelAfterClose, null, "the queue is unbound after close()");
      const after = await netns.traffic(PORT, 10, "A");
      assert.equal(after.receivedTotal, 0, "nothing passes after close()");
    });
  });
});

testWhen(skip, "nfqueue: no bypass — a consumer killed with SIGKILL leaves packets dropped", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await queueUdp(netns, queueNum);
    const consumer = netns.spawnAgent("consumer", String(queueNum));
    try {
      assert.equal((await consumer.next()).ready, true);
      assert.equal((await netns.traffic(PORT, 5, "A")).receivedTotal, 5);
    } finally {
      consumer.kill();
      await consumer.finish();
    }
    assert.equal((await netns.traffic(PORT, 10, "A")).receivedTotal, 0);
  });
});

testWhen(skip, "nfqueue: a second consumer cannot take over a bound queue", async () => {
  await withNetns(async (netns) => {
    const queueNum = uniqueQueueNum();
    await withConsumer(netns, queueNum, async () => {
      const second = netns.spawnAgent("consumer", String(queueNum));
      const answer = await second.next<{ error?: string }>();
      const { code } = await second.finish();
      assert.equal(code, 1);
      assert.match(answer.error ?? "", new RegExp(`^Cannot bind nfqueue ${queueNum}: `));
    });
  });
});

testWhen(
  skip,
  "nfqueue: short copy range, empty datagrams and malformed messages don't crash it",
  async () => {
    await withNetns(async (netns) => {
      const queueNum = uniqueQueueNum();
      await queueUdp(netns, queueNum);
      // 16 bytes: not even the whole IP header, so the agent cannot see the D (drop) letter.
      await withConsumer(netns, queueNum, async (consumer) => {
        const traffic = await netns.traffic(PORT, 20, "D");
        assert.equal(traffic.receivedTotal, 20, "every truncated packet still got its verdict");
        const report = await consumer.ask<ConsumerReport>("stats");
        assert.equal(report.maxPayloadLength, 16);
        assert.equal(report.counters.received, 20);
      }, 16);
      await withConsumer(netns, queueNum, async (consumer) => {
        const empty = await netns.traffic(PORT, 10, "A", true);
        assert.deepEqual(empty.received, { empty: 10 });
        const injected = await consumer.ask<ConsumerReport & { injected: number }>("malformed");
        assert.equal(injected.fatal, null);
        assert.ok(injected.counters.malformed >= 4, `malformed counted: ${injected.counters.malformed}`);
        // Still working afterwards.
        const later = await netns.traffic(PORT, 10, "AD");
        assert.deepEqual(later.received, { A: 5 });
        const report = await consumer.ask<ConsumerReport>("stats");
        // The injected messages with a (fake) packet header got drop verdicts for an id the kernel
        // never issued: it answers those with an error, which the consumer counts.
        assert.ok(
          report.counters.verdictRejected >= 1,
          `verdictRejected: ${report.counters.verdictRejected}`,
        );
        assert.equal(report.kernel?.waiting, 0);
        assert.equal(report.fatal, null);
      });
    });
  },
);

testWhen(
  skip,
  "nfqueue: ENOBUFS (socket overrun) is counted, those packets are dropped, the loop goes on",
  async () => {
    await withNetns(async (netns) => {
      const queueNum = uniqueQueueNum();
      await queueUdp(netns, queueNum);
      // A tiny socket buffer and a 2 ms handler: the kernel cannot deliver every packet to us.
      await withConsumer(
        netns,
        queueNum,
        async (consumer) => {
          const slow = await netns.traffic(PORT, 300, "S");
          const report = await consumer.ask<ConsumerReport>("stats");
          assert.ok(report.counters.enobufs >= 1, `enobufs: ${report.counters.enobufs}`);
          const userDropped = report.kernel?.userDropped ?? -1;
          assert.ok(userDropped >= 1, `kernel user_dropped: ${userDropped}`);
          // Fail closed: what the kernel could not queue to us was dropped, never let through.
          assert.equal(report.counters.received + userDropped + (report.kernel?.queueDropped ?? 0), 300);
          assert.equal(slow.receivedTotal, report.counters.accepted);
          assert.ok(slow.receivedTotal < 300);
          // And the consumer keeps working (the tiny buffer may still overrun now and then: whatever
          // the kernel queued to us got its verdict, the rest was dropped, nothing else).
          const later = await netns.traffic(PORT, 20, "A");
          const after = await consumer.ask<ConsumerReport>("stats");
          const laterUserDropped = (after.kernel?.userDropped ?? 0) - userDropped;
          assert.ok(later.receivedTotal >= 1, "packets pass again once the consumer keeps up");
          assert.equal(after.counters.accepted - report.counters.accepted, later.receivedTotal);
          assert.equal(after.counters.received - report.counters.received + laterUserDropped, 20);
          assert.equal(after.fatal, null);
        },
        undefined,
        4096,
      );
    });
  },
);
