"""End to end: generated sessions go through Kafka into propensityd, and scores come out of Redis.

The daemon runs on config/example.yaml with broker, topic, group and Redis from KAFKA_BROKERS /
KAFKA_TOPIC / KAFKA_GROUP / REDIS_URL; it commits offsets only after Redis acknowledged.

What it checks:
  - the daemon consumes everything: the group's committed offsets reach the produced end offsets
  - every user in the input has {prefix}:u:{user} with purchase_p in (0,1), ts and v, and a TTL
  - users who purchased score higher on average than users who never did
  - SIGTERM stops it with exit code 0 within 10 s, and its log has no error-level lines
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import harness

TOPIC = "events"
PARTITIONS = 4
GROUP = "e2e"
PREFIX = "pd"
N_EVENTS = 3000
USERS = 300
SEED = 42
CONSUME_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def split_keyed(line):
    key, value = line.split(b"\t", 1)
    return key, value


def rank(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for r, i in enumerate(order):
        ranks[i] = float(r)
    return ranks


def spearman(xs, ys):
    """Rank correlation, for the log only; ties are broken arbitrarily."""
    if len(xs) < 3:
        return float("nan")
    rx, ry = rank(xs), rank(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else float("nan")


def check_scores(r, users):
    """Read every user's hash in one pipeline; returns {user: purchase_p}."""
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.hgetall("%s:u:%s" % (PREFIX, u))
        pipe.ttl("%s:u:%s" % (PREFIX, u))
    replies = pipe.execute()
    scores, missing, bad = {}, [], []
    for i, u in enumerate(users):
        h, ttl = replies[2 * i], replies[2 * i + 1]
        if not h:
            missing.append(u)
            continue
        try:
            p = float(h["purchase_p"])
            ts = int(h["ts"])
            v = int(h["v"])
        except (KeyError, ValueError) as exc:
            bad.append("%s: %r (%s)" % (u, h, exc))
            continue
        if not 0.0 < p < 1.0:
            bad.append("%s: purchase_p %r not in (0,1)" % (u, h["purchase_p"]))
        if ts <= 0 or v < 0:
            bad.append("%s: ts %d / v %d" % (u, ts, v))
        if ttl is None or ttl <= 0:
            bad.append("%s: no TTL (ttl=%r)" % (u, ttl))
        scores[u] = p
    check(not missing, "%d of %d users have no %s:u:<user> hash, e.g. %s"
          % (len(missing), len(users), PREFIX, missing[:5]))
    check(not bad, "%d malformed score hashes, e.g.:\n  %s" % (len(bad), "\n  ".join(bad[:5])))
    return scores


def main():
    print(harness.versions())
    config = os.path.join(harness.source_root(), "config", "example.yaml")
    tmp = tempfile.mkdtemp(prefix="pd-e2e-")
    try:
        truth_path = os.path.join(tmp, "truth.jsonl")
        lines = harness.eventgen("--events", N_EVENTS, "--users", USERS, "--seed", SEED,
                                 "--format", "keyed", "--truth", truth_path).splitlines()
        check(len(lines) == N_EVENTS, "pd-eventgen wrote %d lines" % len(lines))
        events = [json.loads(split_keyed(line)[1]) for line in lines]
        users = sorted({e["user_id"] for e in events})
        purchasers = {e["user_id"] for e in events if e["type"] == "purchase"}
        with open(truth_path) as f:
            truth = {t["user_id"]: t["propensity"] for t in map(json.loads, f)}
        print("%d events, %d users, %d purchasers, event time %.1f h"
              % (len(events), len(users), len(purchasers),
                 (events[-1]["ts"] - events[0]["ts"]) / 3600e3))
        check(purchasers and len(purchasers) < len(users), "need buyers and non-buyers")

        with harness.RedisServer() as rs, \
                harness.Broker({TOPIC: PARTITIONS}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            # First half through kcat, second half through kafka-python; both key by user with
            # murmur2, so each user's events stay in order on one partition.
            half = len(lines) // 2
            harness.produce_kcat(broker.bootstrap, TOPIC, lines[:half])
            harness.produce_python(broker.bootstrap, TOPIC, [split_keyed(x) for x in lines[half:]])
            produced = {p: off for p, off in k.end_offsets(TOPIC).items() if off > 0}
            # the broker keeps a bounded log per partition: counting from end offsets is only
            # right while nothing was dropped from the front
            begin = k.beginning_offsets(TOPIC)
            check(all(off == 0 for off in begin.values()), "beginning offsets %s" % begin)
            check(sum(produced.values()) == N_EVENTS, "end offsets %s" % produced)
            print("produced per partition: %s" % produced)

            env = {
                "KAFKA_BROKERS": broker.bootstrap,
                "KAFKA_TOPIC": TOPIC,
                "KAFKA_GROUP": GROUP,
                "REDIS_URL": rs.url,
                "REDIS_PREFIX": PREFIX,
            }
            with harness.Daemon(config, env) as daemon:
                t0 = time.monotonic()
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced,
                                  CONSUME_TIMEOUT, 0.5,
                                  "group %r to commit %s" % (GROUP, produced))
                print("all offsets committed after %.1f s" % (time.monotonic() - t0))

                # Offsets are committed only after Redis acknowledged, so every score is there.
                scores = check_scores(rs.client(), users)
                bought = [scores[u] for u in users if u in purchasers]
                never = [scores[u] for u in users if u not in purchasers]
                m_bought, m_never = statistics.fmean(bought), statistics.fmean(never)
                print("mean purchase_p: purchasers %.4f (n=%d), never purchased %.4f (n=%d)"
                      % (m_bought, len(bought), m_never, len(never)))
                print("rank correlation of purchase_p with latent propensity: %.3f"
                      % spearman([truth[u] for u in users], [scores[u] for u in users]))
                check(m_bought > m_never,
                      "purchasers should score higher: %.4f <= %.4f" % (m_bought, m_never))

                t1 = time.monotonic()
                code = daemon.stop(timeout=STOP_TIMEOUT)
                print("SIGTERM -> exit %s in %.1f s" % (code, time.monotonic() - t1))
                check(code == 0, "propensityd exit code %s on SIGTERM; log tail:\n%s"
                      % (code, daemon.log_tail()))
                errors = daemon.error_lines()
                check(not errors, "error lines in the daemon log:\n  " + "\n  ".join(errors[:10]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("end-to-end test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
