"""Malformed events land in the dead-letter topic with their reasons, and nothing stops.

pd-eventgen --bad-ratio writes malformed lines with ids bad-N that cycle through seven kinds;
each kind has one decoder reason. The test produces a mix through kcat, lets the daemon consume
it, then reads the dead-letter topic and checks, for every malformed line:
  - it is there exactly once, byte for byte, with the reason header of its kind
  - source.topic / source.partition / source.offset point at the original message
  - the good events were all scored and every offset was committed
Two events larger than the dead-letter producer may send (1.5 MB and 3 MB; its limit is
librdkafka's message.max.bytes, 1 MB) go there too, as a prefix with the headers truncated and
original.size, and their offsets are committed only then: before, they were counted and lost.
"""

import os
import re
import shutil
import sys
import tempfile

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import harness

TOPIC = "events"
DLQ = "events.dlq"
BIG = "events.big"  # the oversize events, one per partition (the broker's log per partition is bounded)
GROUP = "dlq"
PREFIX = "pd"

# eventgen's order of malformed kinds (bad-1 is the first kind) and the reason each must get
KIND_REASONS = ["not_json", "missing_user", "wrong_type", "invalid_utf8", "oversize",
                "bad_number", "unknown_type"]

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%s, %s]
  group: ${KAFKA_GROUP}
redis:
  url: ${REDIS_URL}
  prefix: %s
events:
  types: [view, click, add_to_cart, purchase, review]
  max_message_bytes: 64KiB
  dead_letter_topic: %s
features:
  device: { categorical: context.device }
models:
  purchase_propensity:
    type: logistic
    features: [device]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
    output: purchase_p
""" % (TOPIC, BIG, PREFIX, DLQ)

BAD_ID = re.compile(rb'"event_id":"bad-(\d+)"')
BIG_SIZES = [1536 * 1024, 3 * 1024 * 1024]


def big_event(n, size):
    head = b'{"event_id":"big-%d","user_id":"big-user","type":"view","ts":1,"text":"' % n
    return head + b"x" * (size - len(head) - 2) + b'"}'


def produce_big(bootstrap):
    """The oversize events, through a client that may send them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             max_request_size=8 << 20, buffer_memory=64 << 20)
    try:
        futures = [producer.send(BIG, key=b"big-user", value=big_event(n, size), partition=n)
                   for n, size in enumerate(BIG_SIZES)]
        producer.flush(60)
        for fut in futures:
            fut.get(60)
    finally:
        producer.close(10)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def read_all(bootstrap, topic, partitions, expected):
    """Every record of `topic` from the beginning, without a group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
                             consumer_timeout_ms=3000)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records = []
        for rec in consumer:
            records.append(rec)
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-dlq-")
    try:
        config = os.path.join(tmp, "pipeline.yaml")
        with open(config, "w") as f:
            f.write(CONFIG)
        lines = harness.eventgen("--events", 2100, "--users", 200, "--seed", 11,
                                 "--format", "keyed", "--bad-ratio", "0.05").splitlines()
        bad = {}
        for line in lines:
            m = BAD_ID.search(line)
            if m:
                bad[int(m.group(1))] = line.split(b"\t", 1)[1]
        n_bad, n_good = len(bad), len(lines) - len(bad)
        kinds = {KIND_REASONS[(n - 1) % len(KIND_REASONS)] for n in bad}
        print("%d events, %d malformed (%s)" % (len(lines), n_bad, ", ".join(sorted(kinds))))
        check(kinds == set(KIND_REASONS), "need every malformed kind, got %s" % kinds)

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 4, BIG: len(BIG_SIZES), DLQ: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            produce_big(broker.bootstrap)
            n_big = len(BIG_SIZES)
            produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
            begin = k.beginning_offsets(TOPIC)
            check(all(o == 0 for o in begin.values()), "beginning offsets %s" % begin)
            check(sum(produced.values()) == len(lines), "end offsets %s" % produced)
            big_produced = k.end_offsets(BIG)
            check(big_produced == {n: 1 for n in range(n_big)} and
                  all(o == 0 for o in k.beginning_offsets(BIG).values()),
                  "%s holds %s" % (BIG, big_produced))
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": GROUP,
                   "REDIS_URL": rs.url}
            with harness.Daemon(config, env) as daemon:
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced and
                                  k.committed_offsets(GROUP, BIG) == big_produced,
                                  60, 0.3, "every offset committed")
                # committed means the dead letters were acknowledged first
                dlq_end = k.end_offsets(DLQ)
                check(sum(dlq_end.values()) == n_bad + n_big,
                      "dead-letter topic holds %s, expected %d" % (dlq_end, n_bad + n_big))
                code = daemon.stop(timeout=15)
                check(code == 0, "exit %s; log:\n%s" % (code, daemon.log_tail()))
                log = daemon.log_text()
                check("dead_lettered=%d" % (n_bad + n_big) in log,
                      "stop summary does not count %d dead letters:\n%s"
                      % (n_bad + n_big, daemon.log_tail()))

            originals = {(r.partition, r.offset): r.value
                         for r in read_all(broker.bootstrap, TOPIC, sorted(produced),
                                           len(lines))}
            originals.update({("big", r.partition, r.offset): r.value
                              for r in read_all(broker.bootstrap, BIG, range(n_big), n_big)})
            dead = read_all(broker.bootstrap, DLQ, [0], n_bad + n_big)
            check(len(dead) == n_bad + n_big,
                  "read %d dead letters of %d" % (len(dead), n_bad + n_big))
            seen = set()
            by_reason = {}
            big_seen = set()
            for rec in dead:
                h = {key: val.decode() for key, val in rec.headers}
                if rec.value.startswith(b'{"event_id":"big-'):
                    n = int(rec.value[17:18])
                    full = big_event(n, BIG_SIZES[n])
                    check(n not in big_seen, "big-%d dead-lettered twice" % n)
                    big_seen.add(n)
                    check(h.get("reason") == "oversize" and h.get("truncated") == "true" and
                          h.get("original.size") == str(len(full)),
                          "big-%d: headers %s" % (n, h))
                    check(1024 <= len(rec.value) < 1000000 and full.startswith(rec.value),
                          "big-%d: %d bytes, not a prefix under 1 MB" % (n, len(rec.value)))
                    src = ("big", int(h["source.partition"]), int(h["source.offset"]))
                    check(h.get("source.topic") == BIG and originals.get(src) == full,
                          "big-%d: source %s %s" % (n, h.get("source.topic"), src))
                    print("big-%d: %d of %d bytes dead-lettered" % (n, len(rec.value), len(full)))
                    continue
                m = BAD_ID.search(rec.value)
                check(m, "a dead letter that is not one of the malformed lines: %r"
                      % rec.value[:80])
                n = int(m.group(1))
                check(n not in seen, "bad-%d dead-lettered twice" % n)
                seen.add(n)
                want = KIND_REASONS[(n - 1) % len(KIND_REASONS)]
                check(h.get("reason") == want,
                      "bad-%d: reason %r, expected %r (headers %s)" % (n, h.get("reason"),
                                                                      want, h))
                check(rec.value == bad[n], "bad-%d: payload changed on the way" % n)
                check(h.get("source.topic") == TOPIC, "bad-%d: headers %s" % (n, h))
                src = (int(h["source.partition"]), int(h["source.offset"]))
                check(originals.get(src) == rec.value,
                      "bad-%d: source %s does not hold this payload" % (n, src))
                check(h.get("detail"), "bad-%d: no detail header" % n)
                by_reason[want] = by_reason.get(want, 0) + 1
            print("dead letters by reason: %s" % by_reason)

            # the good events were processed: users with scores
            users = {line.split(b"\t", 1)[0].decode() for line in lines
                     if not BAD_ID.search(line)}
            r = rs.client()
            missing = [u for u in users if not r.exists("%s:u:%s" % (PREFIX, u))]
            check(not missing, "%d of %d users unscored, e.g. %s"
                  % (len(missing), len(users), missing[:5]))
            print("%d good events from %d users scored" % (n_good, len(users)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("dead-letter test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
