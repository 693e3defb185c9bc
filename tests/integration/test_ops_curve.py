"""The control socket off the host: tcp:// with CURVE keys and a client allow-list.

What it checks:
  - a tcp:// control endpoint that is not on loopback, without daemon.curve_secret_file, is
    refused at start (exit 1, the reason logged); so is a key file others can read
  - with a key file from `propensityctl keygen` whose further lines allow one client key:
    that client (--server-key, --client-key-file) gets answers; a client with another key,
    and a client without CURVE, get none (exit 3) and the daemon keeps serving
"""

import os
import re
import shutil
import sys
import tempfile

import harness

TOPIC = "events"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def keygen(path):
    res = harness.run_ctl("keygen")
    check(res.returncode == 0, "keygen: %s" % res.stderr)
    with open(path, "w") as f:
        f.write(res.stdout)
    os.chmod(path, 0o600)
    public = re.search(r"^# public: (\S{40})$", res.stdout, re.MULTILINE).group(1)
    return public


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-curve-")
    try:
        server_keys = os.path.join(tmp, "server.key")
        server_public = keygen(server_keys)
        client_a = os.path.join(tmp, "a.key")
        client_b = os.path.join(tmp, "b.key")
        a_public = keygen(client_a)
        keygen(client_b)
        with open(server_keys, "a") as f:
            f.write("# the only client allowed\n%s\n" % a_public)

        env = {"KAFKA_BROKERS": "127.0.0.1:1", "KAFKA_TOPIC": TOPIC, "KAFKA_GROUP": "curve",
               "REDIS_URL": "redis://127.0.0.1:1/0"}
        # ---- refused at start: exposed without keys, and keys others can read
        open_cfg = harness.ops_config(tmp, daemon={"control": "tcp://0.0.0.0:%d"
                                                   % harness.free_port()})
        with harness.Daemon(open_cfg, env) as d:
            code = d.proc.wait(15)
            check(code == 1, "exit %s with an exposed control socket" % code)
            check("curve_secret_file" in d.log_text(), d.log_text())
        loose = os.path.join(tmp, "loose.key")
        shutil.copy(server_keys, loose)
        os.chmod(loose, 0o644)
        loose_cfg = harness.ops_config(tmp, daemon={"control": "tcp://127.0.0.1:%d"
                                                    % harness.free_port(),
                                                    "curve_secret_file": loose})
        with harness.Daemon(loose_cfg, env) as d:
            check(d.proc.wait(15) == 1, "a world-readable key file was accepted")
            check("accessible to other users" in d.log_text(), d.log_text())
            print("refused: %s" % d.error_lines()[-1])

        # ---- CURVE with an allow-list
        endpoint = "tcp://127.0.0.1:%d" % harness.free_port()
        cfg = harness.ops_config(tmp, daemon={"control": endpoint,
                                              "curve_secret_file": server_keys})
        with harness.RedisServer() as rs, harness.Broker({TOPIC: 1}) as broker:
            env.update({"KAFKA_BROKERS": broker.bootstrap, "REDIS_URL": rs.url})
            with harness.Daemon(cfg, env) as d:
                def answered():
                    r = harness.run_ctl("-e", endpoint, "-k", server_public,
                                        "--client-key-file", client_a, "-t", "1000", "status")
                    return r if r.returncode == 0 else None
                res = d.wait_until(answered, 30, 0.3, "an answer to the allowed client")
                check("state: running" in res.stdout, res.stdout)
                res = harness.run_ctl("-e", endpoint, "-k", server_public, "--client-key-file",
                                      client_b, "-t", "1000", "status")
                check(res.returncode == 3, "another client key got an answer (exit %d)"
                      % res.returncode)
                res = harness.run_ctl("-e", endpoint, "-t", "1000", "status")
                check(res.returncode == 3, "a client without CURVE got an answer")
                res = harness.run_ctl("-e", endpoint, "-k", server_public, "--client-key-file",
                                      client_a, "--json", "status")
                check(res.returncode == 0, "the allowed client lost its answers")
                check(d.stop(timeout=15) == 0, "exit code")
                check(not d.error_lines(), "error lines: %s" % d.error_lines())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops curve test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
