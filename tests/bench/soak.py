#!/usr/bin/python3
"""Soak, for tests/bench/run and the meson test bench_soak: the daemon at a fixed rate for a
while, with its memory and pending work sampled every second.

bench_latency produces at RATE events/s (round robin over RATE * 2 users, so the user count is
flat after two seconds) and times every event into Redis, as latency.py does; the daemon runs
CONFIG with labels joined within 10 s and 1 s of allowed lateness, so pending examples level off
after about 11 s. Every second: RSS, pending examples, the publisher's pending users (dirty),
the consumer lag and users from /metrics. Printed: those figures at ten points of the run, and
the second half against the first.

It fails only on a defect, never on a speed figure: the daemon died or did not stop cleanly,
logged errors, did not take exactly what the broker holds, or its RSS kept growing (the end
more than 25% + 32 MiB over the middle of the run; not judged under AddressSanitizer, whose
quarantine of freed memory grows the RSS by design). The count is set against what the broker
acknowledged (bench_latency's delivery reports), the end offsets (every message appended) and
the beginning offsets (what the mock broker's bounded log, about 5 MB a partition, dropped from
the front). A daemon that fell so far behind that the log dropped messages before it read them
is said so, in a line starting NOT JUDGED, and is not a failure (lag is a speed figure).

Usage: soak.py CONFIG [--rate 20000] [--duration 300] [--smoke (5000/s for 20 s)]
Needs PD_BROKER, PD_DAEMON, PD_SOURCE_ROOT and PD_BENCH_LATENCY. Every process it starts is
stopped on exit, on errors and on SIGTERM (harness.py).
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import latency  # noqa: E402  (tests/bench/latency.py)
from latency import harness  # noqa: E402

TOPIC = "soak"
GROUP = "bench-soak"


def asan(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


def sample(live):
    m = latency.metrics(live.port)
    return {
        "t": time.monotonic(),
        "rss": latency.rss_kib(live.pid) / 1024.0,
        "pending": m.get("propensityd_pending_examples", 0),
        "dirty": m.get("propensityd_redis_pending_users", 0),
        "lag": latency.metric_sum(m, "propensityd_kafka_consumer_lag_messages"),
        "users": m.get("propensityd_users", 0),
        "taken": m.get("propensityd_kafka_messages_total", 0),
    }


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows) if rows else 0.0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--flush-interval", default="5ms")
    ap.add_argument("--smoke", action="store_true", help="5000 events/s for 20 s")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rate, args.duration = 5000, 20.0

    tmp = tempfile.mkdtemp(prefix="pd-bench-soak-")
    samples, failures = [], []
    try:
        with harness.RedisServer() as rs, \
                harness.Broker({TOPIC: args.partitions}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            rs.client().config_set("notify-keyspace-events", "Eh")
            port = harness.free_port()
            config = latency.pipeline_config(args.config, tmp, broker.bootstrap, rs.url, port,
                                             args.flush_interval, topic=TOPIC, group=GROUP,
                                             fetch_wait_ms=latency.FETCH_WAIT_MS)
            with latency.LiveDaemon(config, port, args.partitions) as live:
                sanitized = asan(live.pid)
                result = {}

                def produce():
                    try:
                        result["r"] = latency.run_tool(broker.bootstrap, TOPIC, args.rate,
                                                       args.duration, 1.0, redis_port=rs.port)
                    except harness.HarnessError as exc:
                        result["error"] = exc

                producer = threading.Thread(target=produce)
                producer.start()
                t0 = time.monotonic()
                while producer.is_alive():
                    live.daemon.check_alive()
                    samples.append(sample(live))
                    producer.join(timeout=1.0)
                if "error" in result:
                    raise result["error"]
                r = result["r"]
                # a miscount is a failure, but the figures sampled so far are still printed
                got = latency.count_check(k, live, TOPIC, GROUP, latency.Tally().add(r))
                failures += got["failures"]
                after = sample(live)
                peak = latency.rss_kib(live.pid, "VmHWM:") / 1024.0
                live.stop()

            run = [s for s in samples if s["t"] - t0 <= args.duration + 1.0]
            print("  %d events/s for %.0f s (%d produced, %.0f/s achieved), flush_interval %s, "
                  "%d users" % (args.rate, args.duration, r["produced"], r["achieved_rate"],
                                args.flush_interval, r["users"]))
            print("    producer: %d delivered, %d failed%s (%d possibly persisted), %d without a "
                  "report after %.1f s of flushing; %d request retries"
                  % (r["delivered"], r["failed"],
                     " (first: %s)" % r["delivery_error"] if r["delivery_error"] else "",
                     r["possibly_persisted"], r["outstanding"], r["flush_s"], r["retries"]))
            print("    broker: %d appended (end offsets), %d dropped by its bounded log "
                  "(beginning offsets), %d retained; the daemon took %s"
                  % (got["appended"], got["dropped"], got["retained"],
                     "%d" % got["taken"] if got["taken"] is not None else "(not known)"))
            print("    %6s %9s %10s %8s %9s %8s" % ("t (s)", "RSS MiB", "pending ex", "dirty",
                                                 "lag", "users"))
            step = max(1, len(run) // 10)
            for s in run[step - 1::step]:
                print("    %6.0f %9.1f %10.0f %8.0f %9.0f %8.0f"
                      % (s["t"] - t0, s["rss"], s["pending"], s["dirty"], s["lag"], s["users"]))
            half = len(run) // 2
            first, second = run[:half], run[half:]
            print("    second half / first half (means): RSS x%.2f, pending examples x%.2f, "
                  "dirty x%.2f, lag x%.2f"
                  % tuple(mean(second, key) / mean(first, key) if mean(first, key) else 0.0
                          for key in ("rss", "pending", "dirty", "lag")))
            print("    latency over the run: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms (%d late)"
                  % (r["p50_ms"], r["p99_ms"], r["p999_ms"], r["late"]))
            print("    after the last event: pending examples %.0f, dirty %.0f, lag %.0f; peak "
                  "RSS %.1f MiB" % (after["pending"], after["dirty"], after["lag"], peak))
            print("    RSS: %.1f MiB at the first sample, %.1f at mid-run, %.1f at the end, %.1f "
                  "peak (VmHWM); lag peaked at %.0f messages (%.1f s at %d/s)"
                  % (run[0]["rss"], run[len(run) // 2]["rss"], run[-1]["rss"], peak,
                     max(s["lag"] for s in run), max(s["lag"] for s in run) / args.rate,
                     args.rate))
            for note in got["notes"]:
                print("    %s" % note)

            mid, end = run[half]["rss"], run[-1]["rss"]
            bound = mid * 1.25 + 32.0
            if sanitized:
                print("    RSS bound not judged: the daemon runs under AddressSanitizer")
            elif args.duration < 10:
                print("    RSS bound not judged: shorter than 10 s")
            elif end > bound:
                failures.append("RSS grew from %.1f MiB at mid-run to %.1f MiB at the end "
                                "(bound %.1f)" % (mid, end, bound))
            else:
                print("    RSS at the end %.1f MiB against %.1f at mid-run: within the bound "
                      "(%.1f)" % (end, mid, bound))
    except harness.HarnessError as exc:
        failures.append(str(exc))
    finally:
        harness.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("soak.py: %s" % f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
