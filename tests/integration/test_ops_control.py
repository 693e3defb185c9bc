"""The ZeroMQ control plane over its real sockets: every command, malformed requests, the PUB
score feed and propensityctl's readable and --json output.

What it checks:
  - the ipc control socket is created mode 0600
  - status, score, snapshot, reload, pause/resume, log-level and help answer as documented;
    score of an unknown user is an error reply
  - malformed requests (not JSON, not an object, bad or missing arguments, unknown command,
    duplicate keys, invalid UTF-8, deep nesting, several frames, oversize) each get an error
    reply or are dropped, and the daemon keeps answering: never a crash or a hang
  - pause stops consumption and resume catches up
  - the feed publishes score changes with topic = model name
  - propensityctl prints readable text, --json, and exits 1 on refusal, 3 when unreachable
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import zmq

import harness

TOPIC = "events"
GROUP = "ops-control"
N_EVENTS = 400
USERS = 25


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ok(reply, what):
    check(reply.get("ok") is True, "%s: expected ok, got %r" % (what, reply))
    return reply.get("result")


def refused(reply, what):
    check(reply.get("ok") is False and isinstance(reply.get("error"), str) and reply["error"],
          "%s: expected an error reply, got %r" % (what, reply))
    return reply["error"]


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-control-")
    try:
        lines = harness.eventgen("--events", N_EVENTS + 100, "--users", USERS, "--seed", 11,
                                 "--format", "keyed").splitlines()
        first, later = lines[:N_EVENTS], lines[N_EVENTS:]
        users = sorted({json.loads(x.split(b"\t", 1)[1])["user_id"] for x in first})
        ctl_path = os.path.join(tmp, "control.sock")
        endpoint = "ipc://" + ctl_path
        feed_port = harness.free_port()
        feed = "tcp://127.0.0.1:%d" % feed_port
        http_port = harness.free_port()
        snapdir = os.path.join(tmp, "snapshots")
        config = harness.ops_config(tmp, daemon={
            "control": endpoint, "feed": feed, "http": "127.0.0.1:%d" % http_port},
            snapshot_dir=snapdir)

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            ctx = zmq.Context.instance()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"purchase_propensity")
            sub.setsockopt(zmq.RCVTIMEO, 10000)
            with harness.Daemon(config, env) as daemon:
                daemon.wait_until(lambda: os.path.exists(ctl_path), 15, 0.05, "control socket")
                mode = stat.S_IMODE(os.stat(ctl_path).st_mode)
                check(mode == 0o600, "control socket mode %o, want 600" % mode)
                sub.connect(feed)
                time.sleep(0.3)  # a SUB sees only what is published after it joined

                harness.produce_kcat(broker.bootstrap, TOPIC, first)
                produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
                daemon.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 60,
                                  0.3, "offsets %s committed" % produced)

                # ---- status, timed: the loop answers between Kafka polls
                t0 = time.monotonic()
                st = ok(harness.control_call(endpoint, {"cmd": "status"}), "status")
                print("status answered in %.1f ms" % ((time.monotonic() - t0) * 1000))
                check(st["events"] == N_EVENTS, "status events %r" % st["events"])
                check(st["users"] == len(users), "status users %r, want %d"
                      % (st["users"], len(users)))
                check(st["state"] == "running" and st["kafka"]["paused"] is False, st)
                check(st["redis"]["connected"] is True, st)
                check(st["models"][0]["name"] == "purchase_propensity", st["models"])
                daemon.wait_until(lambda: harness.control_call(
                    endpoint, {"cmd": "status"})["result"]["ready"], 20, 0.3, "ready")

                # ---- help
                cmds = {c["cmd"] for c in ok(harness.control_call(endpoint, {"cmd": "help"}),
                                             "help")["commands"]}
                check(cmds >= {"status", "reload", "snapshot", "score", "forget", "pause",
                               "resume", "log-level"}, "help lists %s" % sorted(cmds))

                # ---- score
                sc = ok(harness.control_call(endpoint, {"cmd": "score", "user": users[0]}),
                        "score")
                p = sc["scores"]["purchase_p"]
                check(0.0 < p < 1.0, "score purchase_p %r" % p)
                check(sc["user"] == users[0] and sc["state"]["events"] > 0, sc)
                check(isinstance(sc["state"]["last_ts_by_type"], dict), sc)
                refused(harness.control_call(endpoint, {"cmd": "score", "user": "no-such-user"}),
                        "score of an unknown user")

                # ---- feed: every score change, topic = model name
                topic, payload = sub.recv_multipart()
                msg = json.loads(payload)
                check(topic == b"purchase_propensity", "feed topic %r" % topic)
                check(msg["model"] == "purchase_propensity" and msg["field"] == "purchase_p"
                      and 0.0 < msg["value"] < 1.0 and msg["user"] in users,
                      "feed message %r" % msg)

                # ---- log-level
                lv = ok(harness.control_call(endpoint, {"cmd": "log-level", "level": "debug"}),
                        "log-level")
                check(lv == {"level": "debug", "previous": "info"}, lv)
                refused(harness.control_call(endpoint, {"cmd": "log-level", "level": "loud"}),
                        "log-level loud")
                check(harness.control_call(endpoint, {"cmd": "status"})["result"]["log_level"]
                      == "debug", "log level not applied")
                ok(harness.control_call(endpoint, {"cmd": "log-level", "level": "info"}),
                   "log-level info")

                # ---- snapshot and reload
                snap = ok(harness.control_call(endpoint, {"cmd": "snapshot"}), "snapshot")
                check(os.path.exists(snap["path"]), "snapshot %r not on disk" % snap)
                rl = ok(harness.control_call(endpoint, {"cmd": "reload"}), "reload")
                check(rl["models"] == 1, rl)

                # ---- pause / resume (and propensityctl watch on the feed meanwhile)
                check(ok(harness.control_call(endpoint, {"cmd": "pause"}), "pause")
                      == {"paused": True}, "pause reply")
                harness.produce_kcat(broker.bootstrap, TOPIC, later)
                time.sleep(2.0)
                st = ok(harness.control_call(endpoint, {"cmd": "status"}), "status paused")
                check(st["state"] == "paused" and st["events"] == N_EVENTS,
                      "paused daemon consumed: %r events" % st["events"])
                check(st["ready"] is False and st["not_ready_reason"] == "consumption paused",
                      st)
                watcher = subprocess.Popen(
                    [harness.env_path("PD_CTL"), "--feed", feed, "--json", "--count", "3",
                     "--timeout", "20000", "watch", "purchase_propensity"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(0.5)
                check(ok(harness.control_call(endpoint, {"cmd": "resume"}), "resume")
                      == {"paused": False}, "resume reply")
                daemon.wait_until(lambda: harness.control_call(
                    endpoint, {"cmd": "status"})["result"]["events"] == N_EVENTS + len(later),
                    30, 0.3, "consumption after resume")
                out, err = watcher.communicate(timeout=30)
                check(watcher.returncode == 0, "watch exit %s: %s" % (watcher.returncode, err))
                got = [json.loads(x) for x in out.splitlines()]
                check(len(got) == 3 and all(g["model"] == "purchase_propensity" for g in got),
                      "watch printed %r" % out)

                # ---- malformed requests: an error reply each, never a crash or a hang
                bad = [
                    ("not json", b"status please"),
                    ("empty", b""),
                    ("array", b"[1,2]"),
                    ("string", b'"status"'),
                    ("cmd not a string", b'{"cmd":5}'),
                    ("no cmd", b'{"user":"u1"}'),
                    ("unknown command", b'{"cmd":"explode"}'),
                    ("missing argument", b'{"cmd":"score"}'),
                    ("empty argument", b'{"cmd":"forget","user":""}'),
                    ("argument not a string", b'{"cmd":"score","user":42}'),
                    ("unexpected member", b'{"cmd":"status","verbose":true}'),
                    ("duplicate keys", b'{"cmd":"status","cmd":"pause"}'),
                    ("invalid utf-8", b'{"cmd":"score","user":"\xff\xfe"}'),
                    ("deep nesting", b"[" * 200 + b"]" * 200),
                    ("trailing garbage", b'{"cmd":"status"} x'),
                    ("nul byte", b'{"cmd":"status"}\x00'),
                    ("truncated", b'{"cmd":"sta'),
                ]
                for what, raw in bad:
                    err = refused(harness.control_call(endpoint, raw), what)
                    print("  %-22s -> %s" % (what, err))
                err = refused(harness.control_call(endpoint, None,
                                                   frames=[b'{"cmd":"status"}', b"more"]),
                              "multipart")
                print("  %-22s -> %s" % ("multipart", err))
                # over the size limit the connection is dropped: no reply, no harm
                try:
                    harness.control_call(endpoint, b'{"cmd":"' + b"x" * 70000 + b'"}',
                                         timeout=1.0)
                    raise AssertionError("an oversize request was answered")
                except zmq.Again:
                    pass
                # a client that sends and leaves without reading its reply
                rude = ctx.socket(zmq.REQ)
                rude.setsockopt(zmq.LINGER, 0)
                rude.connect(endpoint)
                rude.send(b'{"cmd":"status"}')
                rude.close()
                st = ok(harness.control_call(endpoint, {"cmd": "status"}), "status after abuse")
                check(daemon.alive(), "daemon died")

                # ---- propensityctl
                cenv = {"PROPENSITYD_CONTROL": endpoint}
                r = harness.run_ctl("status", env=cenv)
                check(r.returncode == 0 and "ready: yes" in r.stdout and "events: " in r.stdout,
                      "propensityctl status (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
                print("propensityctl status:\n" + "\n".join(r.stdout.splitlines()[:12]))
                r = harness.run_ctl("--json", "score", users[1], env=cenv)
                check(r.returncode == 0, "ctl score: %s" % r.stderr)
                check(json.loads(r.stdout)["result"]["user"] == users[1], r.stdout)
                r = harness.run_ctl("score", users[1], env=cenv)
                check(r.returncode == 0 and "purchase_p: " in r.stdout, r.stdout)
                r = harness.run_ctl("score", "no-such-user", env=cenv)
                check(r.returncode == 1 and "unknown user" in r.stderr,
                      "ctl score unknown: %d %s" % (r.returncode, r.stderr))
                r = harness.run_ctl("raw", "{not json", env=cenv)
                check(r.returncode == 1, "ctl raw garbage exit %d" % r.returncode)
                r = harness.run_ctl("-e", "ipc://" + os.path.join(tmp, "nobody.sock"), "status")
                check(r.returncode == 3, "unreachable exit %d: %s" % (r.returncode, r.stderr))
                r = harness.run_ctl("-e", "tcp://127.0.0.1:%d" % harness.free_port(), "-t",
                                    "300", "status")
                check(r.returncode == 3, "timeout exit %d: %s" % (r.returncode, r.stderr))
                r = harness.run_ctl("score", env=cenv)
                check(r.returncode == 2, "usage exit %d" % r.returncode)
                r = harness.run_ctl("--help")
                check(r.returncode == 0 and "SYNOPSIS" in r.stdout, "--help")

                code = daemon.stop(timeout=15)
                check(code == 0, "exit code %s" % code)
                check(not os.path.exists(ctl_path), "control socket left behind")
                errors = daemon.error_lines()
                check(not errors, "error lines:\n  " + "\n  ".join(errors[:10]))
            sub.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops control test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
