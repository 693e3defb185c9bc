"""Fault case 2: the Kafka side fails while events flow (three mock brokers, replicated topic).

Through pd-kafka-broker's control channel (librdkafka's mock cluster fault injection):
  1. every broker down for 6 s, then up;
  2. the partition's leader moves twice (rd_kafka_mock_partition_set_leader);
  3. the next 8 Fetch requests fail (NOT_LEADER_FOR_PARTITION, then UNKNOWN_TOPIC_OR_PART);
  4. the next 6 OffsetCommit requests fail (REQUEST_TIMED_OUT, NOT_COORDINATOR) and the
     group's coordinator moves;
  5. redis-server frozen (SIGSTOP) for 3 s: the broker works, Redis does not.
Throughout, a watcher samples the committed offset every 100 ms and checks that no offset is
committed beyond what Redis acknowledged: every user whose first event lies below a committed
offset has a score hash in Redis, and offsets stand still while Redis is frozen. The consumer
rides through: converged() (tests/faults/faults.py) and a clean SIGTERM exit.
"""

import sys
import threading
import time

import faults
import harness
from faults import check, log


class CommitWatch:
    """Samples the committed offset; for each new value checks Redis holds every user whose
    first message lies below it."""

    def __init__(self, case, k, r):
        self.first_offset = {}
        for off, line in enumerate(case.lines):
            self.first_offset.setdefault(line.split(b"\t", 1)[0].decode(), off)
        self.k, self.r = k, r
        self.seen = 0
        self.samples = 0
        self.violations = []
        self.error = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(0.1):
            try:
                c = faults.committed(self.k).get(0, 0)
            except Exception:  # noqa: BLE001 - the broker is down on purpose
                continue
            if c <= self.seen:
                continue
            self.seen = c
            self.samples += 1
            users = [u for u, off in self.first_offset.items() if off < c]
            pipe = self.r.pipeline(transaction=False)
            for u in users:
                pipe.exists("%s:u:%s" % (faults.PREFIX, u))
            try:
                missing = [u for u, e in zip(users, pipe.execute()) if not e]
            except Exception as exc:  # noqa: BLE001 - redis frozen on purpose
                self.error = exc
                continue
            if missing:
                self.violations.append((c, missing[:5]))

    def stop(self):
        self._stop.set()
        self.thread.join()


def main():
    case = faults.Case("broker", events=8000, users=400, seed=32)
    try:
        with harness.RedisServer() as rs, \
                harness.Broker({faults.TOPIC: 1}, brokers=3, control=True) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            with case.daemon(broker, rs) as d:
                rss = faults.RssWatch(d.proc.pid)
                port = case.http_port
                producer = faults.Producer(broker.bootstrap, case.lines, chunks=20,
                                           pause=0.6).start()
                d.wait_until(lambda: faults.readyz(port)[0] == 200, 30 * faults.SLOW, 0.2,
                             "ready")
                d.wait_until(lambda: sum(faults.committed(k).values()) > 0, 30, 0.2,
                             "a first commit")
                watch = CommitWatch(case, k, rs.client())

                producer.hold()
                broker.command("down -1")
                log("every broker down")
                t0 = time.monotonic()
                lost = None
                while time.monotonic() - t0 < 6:
                    check(harness.http_get(port, "/healthz")[0] == 200, "/healthz failed")
                    status, body = faults.readyz(port)
                    if status == 503 and lost is None:
                        lost = time.monotonic() - t0
                        log("/readyz 503 after %.1f s: %s" % (lost, body.strip()))
                        body_lost = body
                    time.sleep(0.2)
                check(lost is not None and lost < 5 * faults.SLOW,
                      "/readyz stayed 200 through the broker outage")
                check("kafka" in body_lost,
                      "/readyz says %r, not that kafka is unreachable" % body_lost)
                broker.command("up -1")
                producer.release()
                log("brokers up")
                t_up = time.monotonic()
                m = faults.metrics(port)["propensityd_kafka_messages_total"]
                d.wait_until(lambda: faults.metrics(port).get(
                    "propensityd_kafka_assigned_partitions") == 1 and
                    faults.metrics(port)["propensityd_kafka_messages_total"] > m,
                    40 * faults.SLOW, 0.2, "consuming again after the outage")
                log("consuming again %.1f s after the brokers came back"
                    % (time.monotonic() - t_up))

                before = faults.metrics(port)["propensityd_kafka_messages_total"]
                for leader in (2, 3):
                    broker.command("leader %s 0 %d" % (faults.TOPIC, leader))
                    log("partition leader -> broker %d" % leader)
                    time.sleep(1.5)
                broker.command("errors Fetch 4 NOT_LEADER_FOR_PARTITION")
                broker.command("errors Fetch 4 UNKNOWN_TOPIC_OR_PART")
                log("8 Fetch errors queued")
                time.sleep(4)  # each failed fetch backs off (fetch.error.backoff.ms)
                broker.command("errors OffsetCommit 3 REQUEST_TIMED_OUT")
                broker.command("errors OffsetCommit 3 NOT_COORDINATOR")
                broker.command("coordinator faults 2")
                log("6 OffsetCommit errors queued, coordinator -> broker 2")
                time.sleep(2)
                after = faults.metrics(port)["propensityd_kafka_messages_total"]
                check(after > before, "nothing consumed through leader moves and errors (end offsets "
                      "%s, %d produced)" % (k.end_offsets(faults.TOPIC), producer.sent))

                # Redis frozen while the broker is fine: nothing may be committed meanwhile
                # ... while consumption and the loop go on (the flush waits on its own thread)
                m0 = faults.metrics(port)["propensityd_kafka_messages_total"]
                rs.freeze()
                log("redis frozen")
                time.sleep(1.5)  # a flush may have been acknowledged just before
                frozen = faults.committed(k)
                t_frozen = time.monotonic()
                unready = None
                while time.monotonic() - t_frozen < 1.5:
                    status, body = faults.readyz(port)
                    if status == 503 and "redis" in body and unready is None:
                        unready = body.strip()
                    time.sleep(0.1)
                m1 = faults.metrics(port)["propensityd_kafka_messages_total"]
                check(faults.committed(k) == frozen, "offsets moved while redis was frozen")
                check(unready is not None, "/readyz did not say redis stalled while it was frozen")
                log("/readyz while redis was frozen: %s" % unready)
                check(m1 > m0, "consumption stopped while redis was frozen (%d messages)" % m1)
                log("consumed %d messages while redis was frozen" % (m1 - m0))
                rs.thaw()
                log("redis thawed")

                producer.join()
                faults.converged(case, d, rs.client(), k)
                watch.stop()
                check(not watch.violations,
                      "offsets committed beyond what redis held: %s" % watch.violations[:3])
                log("%d committed offsets sampled, each covered by redis" % watch.samples)
                faults.end_clean(d, rss)
    finally:
        case.cleanup()


if __name__ == "__main__":
    sys.exit(faults.run(main))
