"""Secrets: Redis AUTH (password, and ACL user + password) and a Kafka SASL password reach the
clients through the environment or a file, and never show up anywhere an operator looks.

What it checks:
  - against a redis-server with requirepass and an ACL user, the daemon authenticates with
    `password: ${REDIS_PASSWORD}` and with `username:` + `password_file:`, and writes scores
  - a wrong password is refused with a message naming the address, not the password
  - with unique markers as REDIS_PASSWORD, the password file and KAFKA_PASSWORD (passed to
    librdkafka as sasl.password, with librdkafka's conf debug on and log_level debug), none
    of the markers appears in the daemon's log, in `propensityd check` output, in /metrics,
    or in the control socket's `status` (JSON and propensityctl's text)
"""

import json
import os
import shutil
import sys
import tempfile
import uuid

import harness

TOPIC = "events"
PREFIX = "pd"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def marker(what):
    return "SECRET-%s-%s" % (what, uuid.uuid4().hex)


def write_config(tmp, name, http_port, redis_lines):
    sub = os.path.join(tmp, name)
    os.makedirs(sub)
    path = harness.ops_config(sub, daemon={
        "control": "ipc://%s/control.sock" % sub, "http": "127.0.0.1:%d" % http_port,
        "log_level": "debug"}, redis_extra=redis_lines)
    with open(path) as f:
        text = f.read()
    # a SASL password handed to librdkafka (unused on this plaintext broker, but configured),
    # and librdkafka's own dump of its configuration in the log
    text = text.replace("  start: earliest\n", "  start: earliest\n  properties:\n"
                        "    sasl.username: propensityd\n"
                        "    sasl.password: ${KAFKA_PASSWORD}\n"
                        "    debug: conf,security\n", 1)
    check("sasl.password" in text, "could not add kafka properties")
    with open(path, "w") as f:
        f.write(text)
    return path, sub


def surfaces(d, config, env, http_port, ctl):
    """Everything a secret must not reach, as one text."""
    out = [d.log_text()]
    res = harness.run_ctl("status", env={"PROPENSITYD_CONTROL": ctl})
    out += [res.stdout, res.stderr]
    out.append(json.dumps(harness.control_call(ctl, {"cmd": "status"})))
    out.append(harness.http_get(http_port, "/metrics")[1])
    full_env = dict(os.environ)
    full_env.update(env)
    import subprocess
    chk = subprocess.run([harness.env_path("PD_DAEMON"), "check", config], env=full_env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         check=False)
    check(chk.returncode == 0, "check failed:\n" + chk.stdout)
    out.append(chk.stdout)
    return "\n".join(out)


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-secrets-")
    m_default, m_acl, m_kafka, m_wrong = (marker("redis"), marker("acl"), marker("kafka"),
                                          marker("wrong"))
    markers = [m_default, m_acl, m_kafka, m_wrong]
    try:
        lines = harness.eventgen("--events", 200, "--users", 15, "--seed", 4,
                                 "--format", "keyed").splitlines()
        users = {x.split(b"\t", 1)[0].decode() for x in lines}
        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            admin = rs.client()
            admin.acl_setuser("pdops", enabled=True, passwords=["+" + m_acl], keys=["*"],
                              commands=["+@all"])
            admin.config_set("requirepass", m_default)
            admin.close()
            authed = rs.client(password=m_default)
            check(authed.ping(), "redis AUTH setup")
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
            secret_file = os.path.join(tmp, "redis.pass")
            with open(secret_file, "w") as f:
                f.write(m_acl + "\n")
            os.chmod(secret_file, 0o600)

            runs = [
                ("password", "  password: ${REDIS_PASSWORD}\n", {"REDIS_PASSWORD": m_default}),
                ("acl", "  username: pdops\n  password_file: %s\n" % secret_file, {}),
            ]
            for name, redis_lines, extra_env in runs:
                port = harness.free_port()
                config, sub = write_config(tmp, name, port, redis_lines)
                group = "ops-secrets-" + name
                env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                       "KAFKA_GROUP": group, "REDIS_URL": rs.url, "KAFKA_PASSWORD": m_kafka,
                       "REDIS_PREFIX": "pd" + name}
                env.update(extra_env)
                ctl = "ipc://%s/control.sock" % sub
                with harness.Daemon(config, env) as d:
                    d.wait_until(lambda: k.committed_offsets(group, TOPIC) == produced, 60, 0.3,
                                 "offsets committed (%s)" % name)
                    stored = [u for u in users if authed.exists("pd%s:u:%s" % (name, u))]
                    check(len(stored) == len(users), "%s: %d of %d users in redis"
                          % (name, len(stored), len(users)))
                    d.wait_until(lambda: harness.http_get(port, "/metrics")[0] == 200, 10, 0.1,
                                 "/metrics")
                    text = surfaces(d, config, env, port, ctl)
                    check(d.stop(timeout=15) == 0, "%s: exit code" % name)
                    text += d.log_text()
                    check("conf" in d.log_text(), "librdkafka's conf debug did not run")
                    for m in markers:
                        check(m not in text, "%s: a secret leaked (%s...)" % (name, m[:12]))
                    print("%s: authenticated, %d users written, %d bytes of log/check/"
                          "metrics/status without a secret" % (name, len(stored), len(text)))

            # ---- a wrong password: refused, the address named, the password not
            port = harness.free_port()
            config, sub = write_config(tmp, "wrong", port, "  password: ${REDIS_PASSWORD}\n")
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": "ops-secrets-wrong", "REDIS_URL": rs.url,
                   "KAFKA_PASSWORD": m_kafka, "REDIS_PASSWORD": m_wrong}
            with harness.Daemon(config, env) as d:
                d.wait_until(lambda: "failed to authenticate to redis" in d.log_text(), 15, 0.1,
                             "an authentication failure in the log")
                check(d.stop(timeout=15) == 0, "exit code while refused")
                log = d.log_text()
                check("127.0.0.1:%d" % rs.port in log, "the address is not named")
                for m in markers:
                    check(m not in log, "wrong password: a secret leaked (%s...)" % m[:12])
                print("wrong password: %s" % [l for l in log.splitlines()
                                              if "authenticate" in l][0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops secrets test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
