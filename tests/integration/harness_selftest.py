"""Self-test of the integration harness against the real tools it drives: Redis starts and
answers, pd-kafka-broker serves a 4-partition topic, kcat and kafka-python both produce to it
with the same key partitioning, a consumer group reads everything back and its commits are
visible through the admin API. If this fails, the end-to-end tests cannot be trusted.
"""

import json
import sys

import harness

TOPIC = "events"
PARTITIONS = 4
N_EACH = 1000
GROUP = "harness-selftest"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    print(harness.versions())
    with harness.RedisServer() as rs:
        r = rs.client()
        check(r.ping(), "redis PING")
        r.hset("pd:u:selftest", mapping={"purchase_p": "0.5", "ts": "1", "v": "1"})
        check(r.hgetall("pd:u:selftest")["purchase_p"] == "0.5", "redis round trip")
        print("redis ok on port %d" % rs.port)

        with harness.Broker({TOPIC: PARTITIONS, "dead-letter": 1}) as broker:
            print("broker at %s" % broker.bootstrap)
            lines = harness.eventgen("--events", 2 * N_EACH, "--users", 200, "--seed", 7,
                                     "--format", "keyed").splitlines()
            check(len(lines) == 2 * N_EACH, "pd-eventgen wrote %d lines" % len(lines))
            kcat_lines, py_lines = lines[:N_EACH], lines[N_EACH:]

            with harness.KafkaInspector(broker.bootstrap) as k:
                check(len(k.partitions(TOPIC)) == PARTITIONS, "topic has 4 partitions")
                check(k.beginning_offsets(TOPIC) == {p: 0 for p in range(PARTITIONS)},
                      "empty topic starts at 0")

                check(harness.produce_kcat(broker.bootstrap, TOPIC, kcat_lines) == N_EACH,
                      "kcat line count")
                after_kcat = k.end_offsets(TOPIC)
                check(sum(after_kcat.values()) == N_EACH,
                      "after kcat: end offsets %s sum to %d" % (after_kcat, N_EACH))

                records = [tuple(line.split(b"\t", 1)) for line in py_lines]
                py_counts = harness.produce_python(broker.bootstrap, TOPIC, records)
                check(sum(py_counts.values()) == N_EACH, "python producer acks %s" % py_counts)

                end = k.end_offsets(TOPIC)
                print("end offsets after kcat %s, after python %s" % (after_kcat, end))
                check(sum(end.values()) == 2 * N_EACH, "end offsets %s sum to 2000" % end)
                for p in range(PARTITIONS):
                    check(end[p] == after_kcat.get(p, 0) + py_counts.get(p, 0),
                          "partition %d: end %d = kcat %d + python %d"
                          % (p, end[p], after_kcat.get(p, 0), py_counts.get(p, 0)))
                check(k.beginning_offsets(TOPIC) == {p: 0 for p in range(PARTITIONS)},
                      "beginning offsets still 0 (the mock's log bound was not hit)")
                check(k.committed_offsets(GROUP, TOPIC) == {}, "no commits before consuming")

                got = harness.consume_group(broker.bootstrap, GROUP, TOPIC, 2 * N_EACH)
                check(len(got) == 2 * N_EACH, "consumed %d records" % len(got))

                # Keyed by user through both producers: one user, one partition.
                part_of = {}
                for rec in got:
                    event = json.loads(rec.value)
                    check(rec.key.decode() == event["user_id"], "key is the user id")
                    prev = part_of.setdefault(rec.key, rec.partition)
                    check(prev == rec.partition,
                          "user %s on partitions %d and %d: kcat and kafka-python partition "
                          "keys differently" % (rec.key, prev, rec.partition))

                committed = k.committed_offsets(GROUP, TOPIC)
                print("committed %s" % committed)
                check(sum(committed.values()) == 2 * N_EACH,
                      "committed offsets %s sum to 2000" % committed)
                check(committed == end, "committed %s == end offsets %s" % (committed, end))
                check(harness.committed_offsets(broker.bootstrap, GROUP, TOPIC) == committed,
                      "module-level committed_offsets agrees")

            code = broker.stop()
            check(code == 0, "pd-kafka-broker exit code %s on SIGTERM" % code)
    print("harness self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
