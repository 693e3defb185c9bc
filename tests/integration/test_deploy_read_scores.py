"""The reader's examples (deploy/examples/read_scores.py and read_scores.c) against a real Redis.

Declared in deploy/meson.build (suite integration). The test writes users in the documented
layout ({prefix}:u:{user} hash with model outputs, ts, v; {prefix}:rec:{user} sorted set) and
checks, for both examples:
  - they print the scores (in name order), the generation, ts and a staleness of now - ts,
    and the list best first with its scores as stored, cut at --top
  - a user with only a list, and one with nothing ("no scores", "no list", exit 1)
  - both print the same lines (staleness aside) and the Python one's --json agrees
  - one round trip per user: through a counting TCP proxy, each further user on the same
    connection costs exactly one request/response exchange
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import harness

PREFIX = "pdx"
AGE_MS = 4000  # how old the test makes the scores


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class CountingProxy:
    """A TCP proxy to Redis that records the direction of each chunk of bytes; `exchanges()`
    counts the client's bursts (a burst ends when the server answers)."""

    def __init__(self, port):
        self.target = port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.log = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, "C"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "S"), daemon=True).start()

    def _pump(self, src, dst, tag):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.log.append(tag)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self):
        with self.lock:
            self.log = []

    def exchanges(self):
        with self.lock:
            log = list(self.log)
        return sum(1 for i, tag in enumerate(log) if tag == "C" and (i == 0 or log[i - 1] == "S"))

    def close(self):
        self.listener.close()


def readers(port):
    py = os.path.join(harness.source_root(), "deploy", "examples", "read_scores.py")
    c = harness.env_path("PD_READ_SCORES")
    return {
        "python": lambda users, top=10, extra=(): [sys.executable, py, "--url",
                                                   "redis://127.0.0.1:%d/0" % port,
                                                   "--prefix", PREFIX, "--top", str(top)]
        + list(extra) + users,
        "c": lambda users, top=10, extra=(): [c, "-p", str(port), "-P", PREFIX, "-k", str(top)]
        + list(extra) + users,
    }


def run(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30, check=False)


def without_staleness(text):
    return [l for l in text.splitlines() if not l.startswith("staleness_ms ")]


def main():
    print(harness.versions())
    with harness.RedisServer() as rs:
        r = rs.client()
        ts = int(time.time() * 1000) - AGE_MS
        r.hset("%s:u:u42" % PREFIX, mapping={"purchase_p": "0.25", "order_value": "12.5",
                                             "click_p": "0.0312", "ts": str(ts), "v": "3"})
        r.pexpire("%s:u:u42" % PREFIX, 600000)
        r.zadd("%s:rec:u42" % PREFIX, {"sku-%d" % i: 1.0 / (i + 1) for i in range(12)})
        r.zadd("%s:rec:cold" % PREFIX, {"sku-a": 2.5, "sku-b": 0.75})
        # another prefix's keys must not be read
        r.hset("other:u:u42", mapping={"purchase_p": "0.9", "ts": "1", "v": "1"})

        # the list's scores as Redis sends them (text), which is what the readers print
        raw = r.execute_command("ZREVRANGE", "%s:rec:u42" % PREFIX, 0, 4, "WITHSCORES")
        want_u42 = (["user u42", "score click_p 0.0312", "score order_value 12.5",
                     "score purchase_p 0.25", "generation 3", "ts %d" % ts] +
                    ["rec %d %s %s" % (i // 2 + 1, raw[i], raw[i + 1])
                     for i in range(0, len(raw), 2)])
        check(len(want_u42) == 11 and want_u42[6].startswith("rec 1 sku-0 1"), want_u42)
        outputs = {}
        for name, argv in readers(rs.port).items():
            res = run(argv(["u42", "cold", "nobody"], top=5))
            check(res.returncode == 1, "%s: exit %d (want 1: nobody has nothing)\n%s"
                  % (name, res.returncode, res.stderr))
            lines = res.stdout.splitlines()
            stale = [int(l.split()[1]) for l in lines if l.startswith("staleness_ms ")]
            check(len(stale) == 1 and AGE_MS <= stale[0] < AGE_MS + 20000,
                  "%s: staleness %s, want about %d ms" % (name, stale, AGE_MS))
            got = without_staleness(res.stdout)
            check(got[:len(want_u42)] == want_u42, "%s printed:\n%s\nwant:\n%s"
                  % (name, "\n".join(got), "\n".join(want_u42)))
            rest = got[len(want_u42):]
            want_rest = ["user cold", "no scores", "rec 1 sku-a 2.5", "rec 2 sku-b 0.75",
                         "user nobody", "no scores", "no list"]
            check(rest == want_rest, "%s printed for cold/nobody:\n%s" % (name, "\n".join(rest)))
            check(run(argv(["u42"]))
                  .returncode == 0, "%s: exit status not 0 for a known user" % name)
            outputs[name] = got
            print("%s reader: %d lines, staleness %d ms" % (name, len(lines), stale[0]))
        check(outputs["python"] == outputs["c"], "the readers disagree")

        res = run(readers(rs.port)["python"](["u42"], top=3, extra=["--json"]))
        doc = json.loads(res.stdout)
        check(doc["scores"] == {"purchase_p": "0.25", "order_value": "12.5", "click_p": "0.0312"}
              and doc["v"] == "3" and doc["ts"] == ts and len(doc["recs"]) == 3 and
              doc["recs"][0][0] == "sku-0", "--json: %s" % doc)

        # usage and connection errors are exit 2
        for name, argv in readers(harness.free_port()).items():
            res = run(argv(["u42"]))
            check(res.returncode == 2 and res.stderr.strip(),
                  "%s without a server: exit %d %r" % (name, res.returncode, res.stderr))

        # one round trip per user: 3 users on one connection cost 2 exchanges more than 1
        proxy = CountingProxy(rs.port)
        try:
            for name, argv in readers(proxy.port).items():
                counts = []
                for users in (["u42"], ["u42", "cold", "u42"]):
                    proxy.reset()
                    res = run(argv(users))
                    check(res.returncode == 0, "%s via proxy: %s" % (name, res.stderr))
                    time.sleep(0.2)  # let the proxy's threads log the last chunks
                    counts.append(proxy.exchanges())
                check(counts[1] - counts[0] == 2,
                      "%s: %s exchanges for 1 and 3 users; want one per user" % (name, counts))
                print("%s reader: %d exchange(s) for one user (connection setup included), "
                      "one per further user" % (name, counts[0]))
        finally:
            proxy.close()
    print("read_scores examples test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
