"""sd_notify as systemd sees it: the daemon runs with NOTIFY_SOCKET pointing at a datagram
socket of the test's and WATCHDOG_USEC set, as under `Type=notify` with `WatchdogSec=`.

What it checks:
  - with Redis down there is no READY=1, only STATUS= saying it waits for Redis, and the
    watchdog is still fed (waiting is progress); the control socket's status says the same;
    likewise while no Kafka broker answers
  - once both answer: STATUS=starting..., then READY=1 with a STATUS summary
    (events/s, lag, users), then WATCHDOG=1 about every half interval
  - SIGHUP gives RELOADING=1 (with MONOTONIC_USEC) and then READY=1 again
  - SIGTERM gives STOPPING=1, no WATCHDOG=1 after it, and exit code 0
"""

import os
import shutil
import signal
import sys
import tempfile
import time

import harness

TOPIC = "events"
GROUP = "ops-notify"
WATCHDOG_USEC = 1000000


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def daemon_env(notify, brokers, redis_url):
    return {"KAFKA_BROKERS": brokers, "KAFKA_TOPIC": TOPIC, "KAFKA_GROUP": GROUP,
            "REDIS_URL": redis_url, "NOTIFY_SOCKET": notify.path,
            "WATCHDOG_USEC": str(WATCHDOG_USEC)}


def count(notify, key, start=0, end=None):
    msgs = notify.collect()[start:end]
    return sum(1 for m in msgs if key in m)


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-notify-")
    try:
        config = harness.ops_config(tmp)
        lines = harness.eventgen("--events", 200, "--users", 20, "--seed", 5,
                                 "--format", "keyed").splitlines()
        n_users = len({line.split(b"\t", 1)[0] for line in lines})

        # ---- dependencies down: no READY, but STATUS says why and the watchdog is fed; the
        # control socket answers status meanwhile and asks the rest to wait
        waiting_dir = os.path.join(tmp, "waiting")
        os.makedirs(waiting_dir)
        ctl = "ipc://%s/control.sock" % waiting_dir
        waiting_config = harness.ops_config(waiting_dir, daemon={"control": ctl})
        with harness.NotifySocket() as notify:
            dead_redis = "redis://127.0.0.1:%d/0" % harness.free_port()
            with harness.Daemon(waiting_config,
                                daemon_env(notify, "127.0.0.1:1", dead_redis)) as d:
                notify.wait_for("STATUS", None, timeout=15, alive=d.check_alive)
                time.sleep(2.5)
                st = harness.control_call(ctl, {"cmd": "status"})
                check(st["ok"] and st["result"]["state"] == "starting" and
                      st["result"]["not_ready_reason"].startswith("waiting for redis"),
                      "status while waiting for redis: %r" % st)
                busy = harness.control_call(ctl, {"cmd": "score", "user": "u1"})
                check(not busy["ok"] and "starting" in busy["error"], busy)
                msgs = notify.collect()
                check(not any("READY" in m for m in msgs), "READY=1 with redis down: %r" % msgs)
                check(any(m.get("STATUS", "").startswith("waiting for redis") for m in msgs),
                      "no STATUS about redis: %r" % msgs)
                check(count(notify, "WATCHDOG") >= 3, "watchdog not fed while waiting: %r"
                      % msgs)
                check(d.stop(timeout=10) == 0, "exit code on SIGTERM while waiting for redis")

        with harness.RedisServer() as rs:
            with harness.NotifySocket() as notify:
                dead_kafka = "127.0.0.1:%d" % harness.free_port()
                with harness.Daemon(config, daemon_env(notify, dead_kafka, rs.url)) as d:
                    notify.wait_for("STATUS", "waiting for kafka: no broker answers",
                                    timeout=20, alive=d.check_alive)
                    check(notify.index_of("READY") < 0, "READY=1 with no broker")
                    print("no broker: %s" % notify.messages[-1])
                    code = d.stop(timeout=20)
                    check(code == 0, "exit code %s on SIGTERM without a broker" % code)

            # ---- the normal life: READY, STATUS, WATCHDOG, RELOADING, READY, STOPPING
            with harness.Broker({TOPIC: 2}) as broker, harness.NotifySocket() as notify:
                harness.produce_kcat(broker.bootstrap, TOPIC, lines)
                with harness.Daemon(config, daemon_env(notify, broker.bootstrap, rs.url)) as d:
                    t0 = time.monotonic()
                    ready = notify.wait_for("READY", "1", timeout=30, alive=d.check_alive)
                    print("READY=1 after %.1f s: %r" % (time.monotonic() - t0,
                                                         notify.messages[ready]))
                    before = notify.messages[:ready]
                    check(any(m.get("STATUS", "").startswith("starting") for m in before),
                          "no starting STATUS before READY: %r" % before)
                    status = notify.messages[ready].get("STATUS", "")
                    check("events/s" in status and "lag" in status and "users" in status,
                          "READY's STATUS %r" % status)
                    # a summary with the users once the events are in
                    want = " %d users" % n_users
                    try:
                        d.wait_until(lambda: any(
                            want in m.get("STATUS", "") for m in notify.collect()[ready:]),
                            30, 0.2, "STATUS with%s" % want)
                    except harness.HarnessError:
                        print("STATUS lines: %r" % [m["STATUS"] for m in notify.messages
                                                    if "STATUS" in m][-5:])
                        raise
                    mark = len(notify.collect())
                    time.sleep(2.2)
                    pings = count(notify, "WATCHDOG", mark)
                    print("%d WATCHDOG=1 in 2.2 s (interval %d ms)" % (pings,
                                                                      WATCHDOG_USEC // 1000))
                    check(3 <= pings <= 8, "%d watchdog pings in 2.2 s" % pings)

                    mark = len(notify.collect())
                    d.proc.send_signal(signal.SIGHUP)
                    rel = notify.wait_for("RELOADING", "1", start=mark, timeout=15,
                                          alive=d.check_alive)
                    check(int(notify.messages[rel].get("MONOTONIC_USEC", "0")) > 0,
                          "RELOADING without MONOTONIC_USEC: %r" % notify.messages[rel])
                    again = notify.wait_for("READY", "1", start=rel + 1, timeout=15,
                                            alive=d.check_alive)
                    print("SIGHUP: RELOADING=1 at #%d, READY=1 at #%d" % (rel, again))

                    mark = len(notify.collect())
                    code = d.stop(timeout=15)
                    check(code == 0, "exit code %s" % code)
                    stop = notify.index_of("STOPPING", "1", mark)
                    check(stop >= 0, "no STOPPING=1: %r" % notify.messages[mark:])
                    check(count(notify, "WATCHDOG", stop + 1) == 0, "WATCHDOG after STOPPING")
                    errors = d.error_lines()
                    check(not errors, "error lines:\n  " + "\n  ".join(errors[:10]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops notify test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
