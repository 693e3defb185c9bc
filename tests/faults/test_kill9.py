"""Fault case 3: kill -9 at five random points while events flow, snapshots every second.

Each daemon is killed with SIGKILL at a random moment (seeded: PD_FAULT_SEED, printed): the
first before it was even assigned its partition, four 0.1-2 s after their assignment; the one after that gets SIGTERM 1 s after
start, before its assignment (the repro of issue 11 item 1: a snapshot written before the
partitions are assigned must keep the offsets it restored). The next restores the newest
snapshot and resumes from its offsets. At the end no example was learned twice or skipped:
converged() (tests/faults/faults.py): the example counts and every user's scores are the
clean run's, and every offset is committed.
"""

import os
import random
import signal
import sys
import time

import faults
import harness
from faults import check, log


def main():
    seed = int(os.environ.get("PD_FAULT_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    log("seed %d (PD_FAULT_SEED to repeat)" % seed)
    case = faults.Case("kill9", events=8000, users=400, seed=33,
                       snapshot={"interval": "1s", "keep": 2})
    try:
        with harness.RedisServer() as rs, harness.Broker({faults.TOPIC: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            producer = faults.Producer(broker.bootstrap, case.lines, chunks=30,
                                       pause=0.7).start()
            # (delay, signal, after assignment): the first two come before any assignment,
            # the others at a random moment after it
            plan = [(rng.uniform(0.2, 1.0), signal.SIGKILL, False), (1.0, signal.SIGTERM, False)]
            plan += [(rng.uniform(0.1, 2.0), signal.SIGKILL, True) for _ in range(4)]
            kills = 0
            for i, (delay, sig, assigned) in enumerate(plan):
                with case.daemon(broker, rs, tag=str(i)) as d:
                    if assigned:
                        d.wait_until(lambda: "assigned 1 partition" in d.log_text(),
                                     30 * faults.SLOW, 0.05, "daemon %d: assignment" % i)
                    time.sleep(delay)
                    d.check_alive()
                    msgs = faults.committed(k).get(0, 0)
                    if sig == signal.SIGKILL:
                        d.proc.send_signal(signal.SIGKILL)
                        d.proc.wait(10)
                        harness._live.discard(d.proc)
                        d.proc = None
                        kills += 1
                    else:
                        code = d.stop(timeout=30)
                        check(code == 0, "SIGTERM before assignment: exit %s" % code)
                    log("daemon %d: %s %.1f s after %s (committed %d)"
                        % (i, signal.Signals(sig).name, delay,
                           "its assignment" if assigned else "start", msgs))
            check(kills == 5, "%d kills" % kills)
            producer.join()
            with case.daemon(broker, rs, tag="final") as d:
                rss = faults.RssWatch(d.proc.pid)
                faults.converged(case, d, rs.client(), k)
                check("restored snapshot" in d.log_text(), "the last daemon restored nothing")
                faults.end_clean(d, rss)
    finally:
        case.cleanup()


if __name__ == "__main__":
    sys.exit(faults.run(main))
