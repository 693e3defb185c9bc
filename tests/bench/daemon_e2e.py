#!/usr/bin/python3
"""The daemon end to end, for tests/bench/run: Kafka (pd-kafka-broker) -> propensityd -> Redis.

Produces the keyed events of EVENTS.tsv (USER<TAB>JSON lines from pd-eventgen --format keyed)
with kcat into a topic of many partitions, times `kcat -C -e` reading the whole topic (the raw
consume rate, the reference), then runs propensityd on CONFIG (its kafka: line replaced to point
at the broker, a redis: section added) and times until the group's committed offsets reach the
end offsets. Offsets are committed only after Redis acknowledged the scores, so that is the time
to score every event into Redis.

Usage: daemon_e2e.py CONFIG EVENTS.tsv [--partitions N] [--repeat N]
Needs the PD_* variables of tests/integration/meson.build (tests/bench/run sets them):
PD_BROKER, PD_DAEMON, PD_SOURCE_ROOT, and optionally PD_REDIS_SERVER, PD_KCAT.
Every process it starts is stopped on exit, on errors and on SIGTERM (harness.py).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py)

TOPIC = "events"
GROUP = "bench"
CONSUME_TIMEOUT = 180.0
POLL_INTERVAL = 0.05


def pipeline_config(source, directory, bootstrap, redis_url, properties=()):
    """CONFIG with its one-line kafka: section pointing at the broker and a redis: section."""
    with open(source) as f:
        lines = f.read().splitlines()
    kafka = [i for i, line in enumerate(lines) if line.startswith("kafka:")]
    if len(kafka) != 1 or "{" not in lines[kafka[0]] or any(
            line.startswith("redis:") for line in lines):
        raise harness.HarnessError("%s: expected a one-line `kafka: {...}` and no redis: section"
                                   % source)
    props = ""
    if properties:
        props = ", properties: { %s }" % ", ".join(
            "%s: \"%s\"" % tuple(kv.split("=", 1)) for kv in properties)
    lines[kafka[0]] = ("kafka: { brokers: \"%s\", topics: [%s], group: %s, start: earliest%s }"
                       % (bootstrap, TOPIC, GROUP, props))
    lines += ["redis:", "  url: %s" % redis_url, "  prefix: bench", "  ttl: 1h",
              "  flush_interval: 50ms"]
    path = os.path.join(directory, "pipeline.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def kcat_produce(bootstrap, path):
    argv = [harness._tool("PD_KCAT", "kcat"), "-P", "-b", bootstrap, "-t", TOPIC,
            "-K", harness.KCAT_KEY_DELIM, "-X", "topic.partitioner=" + harness.KCAT_PARTITIONER,
            "-X", "queue.buffering.max.messages=1000000", "-X", "linger.ms=20", "-l", path]
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    secs = time.monotonic() - t0
    if proc.returncode != 0 or b"ERROR" in proc.stderr:
        raise harness.HarnessError("kcat -P failed (%d): %s"
                                   % (proc.returncode, proc.stderr.decode(errors="replace")))
    return secs


def kcat_consume(bootstrap, expected):
    """Seconds for `kcat -C -e` to read the topic from the beginning, values to a pipe."""
    argv = [harness._tool("PD_KCAT", "kcat"), "-C", "-b", bootstrap, "-t", TOPIC,
            "-o", "beginning", "-e", "-q", "-f", "%s\\n"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    while True:
        chunk = proc.stdout.read(1 << 20)
        if not chunk:
            break
        count += chunk.count(b"\n")
    err = proc.stderr.read()
    proc.wait()
    secs = time.monotonic() - t0
    if proc.returncode != 0 or count != expected:
        raise harness.HarnessError("kcat -C read %d of %d messages (exit %d): %s"
                                   % (count, expected, proc.returncode,
                                      err.decode(errors="replace")))
    return secs


def redis_writes(client):
    """(HSET calls, all commands) the Redis server has run so far."""
    stats = client.info("commandstats")
    hset = stats.get("cmdstat_hset", {}).get("calls", 0)
    return hset, client.info("stats")["total_commands_processed"]


def redis_benchmark(port, requests):
    """redis-benchmark's HSET rate (requests/s, 64 pipelined) on the same server: random keys
    of 100k, the three fields the daemon writes per user."""
    argv = [harness._tool("PD_REDIS_BENCHMARK", "redis-benchmark"), "-p", str(port), "-P", "64",
            "-n", str(requests), "-r", "100000", "--csv",
            "HSET", "bench:rb:__rand_int__", "purchase_p", "0.5", "ts", "__rand_int__", "v", "1"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    lines = [line for line in proc.stdout.decode().splitlines() if line.startswith('"HSET')]
    if proc.returncode != 0 or not lines:
        raise harness.HarnessError("redis-benchmark failed (%d): %s"
                                   % (proc.returncode, proc.stderr.decode(errors="replace")))
    return float(lines[-1].split(",")[1].strip('"'))


def cpu_seconds(pid):
    """User + system CPU time of the process so far (all its threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("events")
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="kcat -C runs, best kept")
    ap.add_argument("--kafka-property", action="append", default=[], metavar="K=V",
                    help="a kafka.properties entry for the daemon (repeatable)")
    args = ap.parse_args(argv)

    with open(args.events, "rb") as f:
        n_events = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    size = os.path.getsize(args.events)
    tmp = tempfile.mkdtemp(prefix="pd-bench-e2e-")
    try:
        with harness.RedisServer() as rs, \
                harness.Broker({TOPIC: args.partitions}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            t_produce = kcat_produce(broker.bootstrap, args.events)
            end = k.end_offsets(TOPIC)
            begin = k.beginning_offsets(TOPIC)
            # The mock broker keeps a bounded log per partition and drops from the front:
            # counting from end offsets is only right while every beginning offset is 0.
            if any(off != 0 for off in begin.values()):
                raise harness.HarnessError(
                    "the broker dropped messages (beginning offsets %s): use more partitions "
                    "or fewer events" % {p: o for p, o in begin.items() if o})
            if sum(end.values()) != n_events:
                raise harness.HarnessError("produced %d events, end offsets sum to %d"
                                           % (n_events, sum(end.values())))
            produced = {p: off for p, off in end.items() if off > 0}
            print("  produced %d events (%.1f MB) into %d partitions with kcat -P in %.2f s "
                  "(%.0f events/s)" % (n_events, size / 1e6, args.partitions, t_produce,
                                       n_events / t_produce))

            t_kcat = min(kcat_consume(broker.bootstrap, n_events) for _ in range(args.repeat))
            kcat_rate = n_events / t_kcat
            print("  reference: kcat -C -e reads the topic in %.2f s: %.0f events/s (best of %d)"
                  % (t_kcat, kcat_rate, args.repeat))

            config = pipeline_config(args.config, tmp, broker.bootstrap, rs.url,
                                     args.kafka_property)
            client = rs.client()
            if args.kafka_property:
                print("  the daemon's kafka.properties: %s" % ", ".join(args.kafka_property))
            with harness.Daemon(config, {}) as daemon:
                t0 = time.monotonic()
                first = None  # (time, events committed) at the first commit seen
                while True:
                    daemon.check_alive()
                    committed = k.committed_offsets(GROUP, TOPIC)
                    now = time.monotonic()
                    done = sum(committed.values())
                    if first is None and done > 0:
                        first = (now, done, cpu_seconds(daemon.proc.pid), redis_writes(client))
                    if committed == produced:
                        break
                    if now - t0 > CONSUME_TIMEOUT:
                        raise harness.HarnessError(
                            "propensityd committed %d of %d events in %.0f s; log tail:\n%s"
                            % (done, n_events, CONSUME_TIMEOUT, daemon.log_tail()))
                    time.sleep(POLL_INTERVAL)
                t_end = time.monotonic()
                rss = peak_rss_kib(daemon.proc.pid)
                cpu_end = cpu_seconds(daemon.proc.pid)
                writes_end = redis_writes(client)
                users = rs.client().dbsize()
                code = daemon.stop(timeout=30.0)
                if code != 0:
                    raise harness.HarnessError("propensityd exited with %s on SIGTERM; log "
                                               "tail:\n%s" % (code, daemon.log_tail()))
                errors = daemon.error_lines()
                if errors:
                    raise harness.HarnessError("error lines in the daemon log:\n  "
                                               + "\n  ".join(errors[:10]))
            total = t_end - t0
            print("  propensityd: every offset committed %.2f s after start (%.0f events/s "
                  "overall, group join included)" % (total, n_events / total))
            if first is not None and t_end - first[0] > 0.2 and first[1] < n_events:
                steady = (n_events - first[1]) / (t_end - first[0])
                print("  propensityd from its first commit to the last: %d events in %.2f s: "
                      "%.0f events/s, x%.2f of kcat -C"
                      % (n_events - first[1], t_end - first[0], steady, steady / kcat_rate))
                if first[2] is not None and cpu_end is not None:
                    cpu = cpu_end - first[2]
                    print("  propensityd CPU over those events: %.2f s (all threads), %.1f us per "
                          "event, %.0f%% of one core"
                          % (cpu, 1e6 * cpu / (n_events - first[1]),
                             100.0 * cpu / (t_end - first[0])))
            else:
                print("  propensityd committed nearly everything at once: too few events to "
                      "time a steady rate (overall x%.2f of kcat -C)"
                      % (n_events / total / kcat_rate))
            print("  redis keys written: %d; daemon peak RSS %s" %
                  (users, "%.1f MiB" % (rss / 1024.0) if rss else "unknown"))
            if first is not None and t_end - first[0] > 0.2:
                secs = t_end - first[0]
                hset = (writes_end[0] - first[3][0]) / secs
                cmds = (writes_end[1] - first[3][1]) / secs
                bench = redis_benchmark(rs.port, 200000 if n_events < 100000 else 2000000)
                print("  redis writes of the daemon from its first commit to the last: %.0f HSET/s "
                      "(%.0f commands/s)" % (hset, cmds))
                print("  reference: redis-benchmark -P 64 HSET (random keys, 3 fields) on the same "
                      "server: %.0f requests/s; the daemon's HSET/s is x%.3f of it"
                      % (bench, hset / bench))
    except harness.HarnessError as exc:
        print("daemon_e2e.py: %s" % exc, file=sys.stderr)
        return 1
    finally:
        harness.kill_all()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
