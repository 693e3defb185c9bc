"""Fault case 1: Redis down for 10 s mid-stream, then slow, then refusing writes (OOM).

While events flow: redis-server is shut down (SHUTDOWN SAVE, so what it acknowledged survives
the restart as it would in production) and started again on the same port 10 s later; then
every write waits about 0.9 s (CLIENT PAUSE WRITE, renewed each second) for 4 s; then
maxmemory 1 with noeviction refuses every write (OOM) for 4 s. Meanwhile:
  - /readyz turns 503 naming Redis within 3 s of each outage and 200 once writes work again;
  - /healthz stays 200 (the loop turns) and offsets do not move while nothing is written;
  - reconnects back off: at most a dozen connection attempts in the 10 s outage;
  - memory stays bounded (updates are coalesced per user while Redis is away).
The end: converged() (tests/faults/faults.py), and a clean SIGTERM exit.
"""

import sys
import threading
import time

import redis as redispy

import faults
import harness
from faults import check, log


def wait_ready(port, want_ready, timeout, what):
    """Seconds until /readyz says 200 (want_ready) or 503 naming redis."""
    t0 = time.monotonic()

    def probe():
        status, body = faults.readyz(port)
        if want_ready:
            return status == 200
        return status == 503 and "redis" in body and body
    body = harness.wait_for(probe, timeout, 0.1, what)
    dt = time.monotonic() - t0
    log("%s after %.1f s%s" % (what, dt, (": " + body.strip()) if isinstance(body, str) else ""))
    return dt


def main():
    case = faults.Case("redis", events=8000, users=400, seed=31)
    try:
        with harness.RedisServer() as rs, harness.Broker({faults.TOPIC: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            with case.daemon(broker, rs) as d:
                rss = faults.RssWatch(d.proc.pid)
                port = case.http_port
                producer = faults.Producer(broker.bootstrap, case.lines, chunks=24,
                                           pause=0.8).start()
                d.wait_until(lambda: faults.readyz(port)[0] == 200, 30 * faults.SLOW, 0.2,
                             "ready")
                d.wait_until(lambda: sum(faults.committed(k).values()) > 0, 30, 0.2,
                             "a first commit")
                m0 = faults.metrics(port)

                # ---- down 10 s ----
                c = rs.client()
                try:
                    c.shutdown(save=True)
                except redispy.exceptions.ConnectionError:
                    pass
                rs.proc.wait(10)
                harness._live.discard(rs.proc)
                rs.proc = None
                log("redis down")
                t_down = time.monotonic()
                dt = wait_ready(port, False, 3 * faults.SLOW, "/readyz 503 naming redis")
                check(dt < 3 * faults.SLOW, "/readyz took %.1f s to say redis is down" % dt)
                time.sleep(1.5)  # a flush in flight when redis went may still commit
                frozen = faults.committed(k)
                while time.monotonic() - t_down < 10:
                    check(harness.http_get(port, "/healthz")[0] == 200, "/healthz failed")
                    time.sleep(0.5)
                check(faults.committed(k) == frozen,
                      "offsets moved while redis was down: %s -> %s"
                      % (frozen, faults.committed(k)))
                m1 = faults.metrics(port)
                attempts = (m1["propensityd_redis_flush_failures_total"] -
                            m0["propensityd_redis_flush_failures_total"])
                log("%d failed flushes (connection attempts) in the 10 s outage" % attempts)
                check(1 <= attempts <= 12, "%d flush attempts in 10 s: no backoff" % attempts)
                rs.up()
                log("redis up again")
                wait_ready(port, True, 10 * faults.SLOW, "/readyz 200 after the restart")
                d.wait_until(lambda: faults.committed(k) != frozen, 10 * faults.SLOW, 0.2,
                             "commits after the restart")

                # ---- slow: every write waits ~0.9 s, for 4 s ----
                c = rs.client()
                stop = threading.Event()

                def pauser():
                    while not stop.is_set():
                        c.execute_command("CLIENT", "PAUSE", "900", "WRITE")
                        stop.wait(1.0)
                t = threading.Thread(target=pauser, daemon=True)
                t.start()
                t_slow = time.monotonic()
                n_slow = faults.metrics(port)["propensityd_redis_flush_failures_total"]
                moved = False
                before = faults.committed(k)
                while time.monotonic() - t_slow < 4:
                    moved |= faults.committed(k) != before
                    check(harness.http_get(port, "/healthz")[0] == 200, "/healthz failed")
                    time.sleep(0.3)
                stop.set()
                t.join()
                c.execute_command("CLIENT", "UNPAUSE")
                log("slow phase: commits %s, flush failures %+d" % (
                    "went on" if moved else "waited",
                    faults.metrics(port)["propensityd_redis_flush_failures_total"] - n_slow))

                # ---- OOM: every write refused for 4 s ----
                c.config_set("maxmemory-policy", "noeviction")
                c.config_set("maxmemory", "1")
                log("redis refuses writes (OOM)")
                wait_ready(port, False, 3 * faults.SLOW, "/readyz 503 on OOM")
                time.sleep(1.5)
                frozen = faults.committed(k)
                time.sleep(2.5)
                check(faults.committed(k) == frozen,
                      "offsets moved while redis refused writes: %s -> %s"
                      % (frozen, faults.committed(k)))
                c.config_set("maxmemory", "0")
                log("redis takes writes again")
                wait_ready(port, True, 10 * faults.SLOW, "/readyz 200 after OOM")

                producer.join()
                faults.converged(case, d, rs.client(), k)
                faults.end_clean(d, rss)
    finally:
        case.cleanup()


if __name__ == "__main__":
    sys.exit(faults.run(main))
