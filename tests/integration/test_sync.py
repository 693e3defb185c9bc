"""Model weights in step (README "Scale-out"): two daemons in one consumer group split a topic
of four partitions, each learns on its own, and every 300 ms each publishes the deltas of what
it learned to a topic of model deltas and applies the other's. After the stream:
  - both serve the same model: the probe of the status reply (the model's scores of fixed
    synthetic vectors spread over thousands of weights) agrees within 1e-4 in log-odds;
  - each learned only its own share and counters stay local: their examples plus the examples
    still waiting for a label sum to the stream's view and click events, and both learned some;
  - the Redis field v is the group-wide generation (a sync round), the same order of magnitude
    on both;
  - nothing was skipped as malformed or of another fingerprint.
Prints bytes per round per model and the sync lag (from /metrics)."""

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import harness

TOPIC, DELTAS, GROUP, PREFIX = "events", "deltas", "pd-sync", "pdsync"
PARTITIONS, N_EVENTS, USERS, SEED = 4, 6000, 300, 13
INTERVAL_MS = 300
TOLERANCE = 1e-4  # log-odds of the probe scores


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def logit(p):
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def status(endpoint):
    reply = harness.control_call(endpoint, {"cmd": "status"})
    check(reply.get("ok"), "status failed: %s" % reply)
    return reply["result"]


def start_member(directory, i, port, endpoint, env):
    """A daemon of the group with sync on and snapshots in directory/snap."""
    snap = os.path.join(directory, "snap")
    os.makedirs(snap, exist_ok=True)
    config = harness.ops_config(
        directory, daemon={"control": endpoint, "http": "127.0.0.1:%d" % port},
        snapshot_dir=snap,
        extra="\nsync:\n  enabled: true\n  topic: %s\n  interval: %dms\n"
              "  instance_id: sync-test-%d\n" % (DELTAS, INTERVAL_MS, i))
    # the eager protocol, as in test_scale_out.py: the mock broker mishandles cooperative
    # rebalances of several members (README, "Scale-out"), and a member joining or leaving
    # then holds up the others' commits and stops
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("  start: earliest\n", "  start: earliest\n  properties:\n"
                             "    partition.assignment.strategy: range\n"
                             # the mock broker waits a session for a member that missed a
                             # round of the rebalance (librdkafka's default: 45 s)
                             "    session.timeout.ms: 6000\n"
                             "    heartbeat.interval.ms: 500\n", 1))
    return harness.Daemon(config, env).start()


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-sync-")
    daemons = []
    try:
        lines = harness.eventgen("--events", N_EVENTS, "--users", USERS, "--seed", SEED,
                                 "--format", "keyed").splitlines()
        events = [json.loads(line.split(b"\t", 1)[1] if b"\t" in line else line)
                  for line in lines]
        examples = sum(1 for e in events if e["type"] in ("view", "click"))
        with harness.RedisServer() as rs, \
                harness.Broker({TOPIC: PARTITIONS, DELTAS: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url, "REDIS_PREFIX": PREFIX}
            ports, ctl = [], []
            for i in range(2):
                d = os.path.join(tmp, "d%d" % i)
                os.mkdir(d)
                port = harness.free_port()
                endpoint = "ipc://%s/control.sock" % d
                daemons.append(start_member(d, i, port, endpoint, env))
                ports.append(port)
                ctl.append(endpoint)

            # both in the group and hearing each other before the stream starts
            seen = {}

            def settled():
                for c in ctl:
                    try:
                        st = status(c)
                    except Exception:  # noqa: BLE001 - not up yet
                        return False
                    if st["kafka"]["assigned_partitions"] < 1 or not st["sync"]["peers"]:
                        seen["last"] = (st["kafka"], st["sync"]["peers"])
                        return False
                return True
            try:
                harness.wait_for(settled, 40, 0.2, "both daemons assigned and hearing each "
                                 "other", alive=lambda: all(d.check_alive() is None
                                                            for d in daemons))
            except harness.HarnessError:
                for i, d in enumerate(daemons):
                    sys.stderr.write("---- daemon %d (last status %s) ----\n%s\n"
                                     % (i, seen.get("last"), d.log_tail(30)))
                raise
            t0 = time.monotonic()
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            produced = {p: off for p, off in k.end_offsets(TOPIC).items() if off > 0}
            check(sum(produced.values()) == N_EVENTS, "end offsets %s" % produced)
            harness.wait_for(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 30, 0.3,
                             "group %r to commit %s" % (GROUP, produced))
            print("stream consumed by the group in %.1f s" % (time.monotonic() - t0))

            # learning stops once the stream's labels are resolved; then the probes converge
            def probes_agree():
                sts = [status(c) for c in ctl]
                pa = sts[0]["sync"]["probe"]["purchase_propensity"]
                pb = sts[1]["sync"]["probe"]["purchase_propensity"]
                diff = max(abs(logit(a) - logit(b)) for a, b in zip(pa, pb))
                learned = [s["models"][0]["examples"] for s in sts]
                return (diff, learned, sts) if diff <= TOLERANCE else None
            last = {}

            def converged():
                got = probes_agree()
                if got is None:
                    return False
                # stable: the same counts two checks in a row
                ok = last.get("learned") == got[1]
                last["learned"] = got[1]
                return got if ok else False
            diff, learned, sts = harness.wait_for(converged, 25, 0.5, "the two models to agree")
            pending = [s["pending_examples"] for s in sts]
            print("examples learned %s, pending %s, view+click events %d"
                  % (learned, pending, examples))
            print("probe log-odds agree within %.2g (tolerance %g): %s"
                  % (diff, TOLERANCE, [round(logit(x), 4) for x in
                                       sts[0]["sync"]["probe"]["purchase_propensity"][:4]]))
            check(all(n > 0 for n in learned), "each instance learns its share: %s" % learned)
            check(sum(learned) + sum(pending) == examples,
                  "examples %s + pending %s != %d view and click events"
                  % (learned, pending, examples))
            # a model that learned nothing would agree too: the probes moved off the prior
            check(any(abs(logit(x) - logit(sts[0]["sync"]["probe"]["purchase_propensity"][0]))
                      > 0 for x in sts[0]["sync"]["probe"]["purchase_propensity"]) or
                  abs(logit(sts[0]["sync"]["probe"]["purchase_propensity"][0])) > 1e-3,
                  "the probe shows no learning")

            for i, port in enumerate(ports):
                m = harness.metrics_samples(port)
                rounds = m["propensityd_sync_rounds_total"]
                mb = m['propensityd_sync_model_bytes_total{model="purchase_propensity"}']
                print("instance %d: %d rounds, %.0f bytes of model deltas in all, %.0f bytes per "
                      "round, %d messages, lag %.3f s, generation %d (round %d), applied %d parts"
                      % (i, rounds, mb, mb / max(rounds, 1),
                         m['propensityd_sync_published_total{unit="messages"}'],
                         m["propensityd_sync_lag_seconds"], m["propensityd_sync_generation"],
                         sts[i]["sync"]["round"], m["propensityd_sync_applied_total"]))
                for reason in ("malformed", "fingerprint", "unknown_model", "bad_part"):
                    check(m['propensityd_sync_skipped_total{reason="%s"}' % reason] == 0,
                          "instance %d skipped %s deltas" % (i, reason))
                check(m["propensityd_sync_applied_total"] > 0, "instance %d applied nothing" % i)
                check(m["propensityd_sync_lag_seconds"] < 5, "lag %s"
                      % m["propensityd_sync_lag_seconds"])
                gen = sts[i]["sync"]["generation"]
                check(sts[i]["sync"]["round"] - gen <= 10, "generation %d behind round %d"
                      % (gen, sts[i]["sync"]["round"]))

            # v in Redis is a sync round: floor(wall ms / interval), not the config generation
            r = rs.client()
            keys = list(r.scan_iter("%s:u:*" % PREFIX))
            vs = [int(r.hget(key, "v")) for key in keys[:50] if r.hget(key, "v") is not None]
            check(vs, "no score hashes with v in redis")
            now_round = int(time.time() * 1000) // INTERVAL_MS
            check(all(now_round - 1000 < v <= now_round for v in vs), "v %s, round now %d"
                  % (sorted(set(vs))[:5], now_round))

            # a new member starts from the snapshot the group published: daemon 0 writes one
            # on request (published to Redis), daemon 2 has no snapshot of its own
            reply = harness.control_call(ctl[0], {"cmd": "snapshot"})
            check(reply.get("ok"), "snapshot on request: %s" % reply)
            check(r.exists("%s:snapshot:%s" % (PREFIX, GROUP)), "no group snapshot in redis")
            d2 = os.path.join(tmp, "d2")
            os.mkdir(d2)
            ports.append(harness.free_port())
            ctl.append("ipc://%s/control.sock" % d2)
            daemons.append(start_member(d2, 2, ports[2], ctl[2], env))
            daemons[2].wait_until(lambda: "started the models from the group's snapshot"
                                  in daemons[2].log_text(), 30, 0.2, "daemon 2 to start from "
                                  "the group's snapshot")

            def joined_agrees():
                try:
                    p2 = status(ctl[2])["sync"]["probe"]["purchase_propensity"]
                except Exception:  # noqa: BLE001 - not up yet
                    return None
                p0 = status(ctl[0])["sync"]["probe"]["purchase_propensity"]
                diff = max(abs(logit(x) - logit(y)) for x, y in zip(p0, p2))
                seen["joined"] = (diff, p0[:3], p2[:3])
                return (diff,) if diff <= TOLERANCE else None  # 0.0 agrees too
            try:
                diff2, = harness.wait_for(joined_agrees, 30, 0.3, "daemon 2's model to agree")
            except harness.HarnessError:
                raise AssertionError("daemon 2's model differs by %s (probes %s, %s):\n%s"
                                     % (seen.get("joined") + (daemons[2].log_tail(30),)))
            print("a member started from the group's snapshot agrees within %.2g" % diff2)

            # all at once, as a deployment stops: one stopping alone rebalances the group
            # under the other, whose final commit then waits out the rebalance (not sync's)
            for d in daemons:
                d.proc.send_signal(signal.SIGTERM)
            for i, d in enumerate(daemons):
                code = d.stop(timeout=30)
                check(code == 0, "daemon %d exit %s:\n%s" % (i, code, d.log_tail()))
                # three members leaving the mock broker's group at once: a coordinator
                # request may time out while it rebalances (librdkafka logs it as an error)
                errors = [e for e in d.error_lines() if "Group rebalance in progress" not in e
                          and "request(s) timed out" not in e]
                check(not errors, "error lines in daemon %d's log:\n  %s"
                      % (i, "\n  ".join(errors[:10])))
    finally:
        for d in daemons:
            if d.alive():
                d.kill()
            d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print("sync test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
