"""The command lines read the same way everywhere: one-line usage errors with a Try '--help'
hint (exit 2) and a did-you-mean for commands, -V, `--help` of every command of propensityd and
propensityctl (exit 0); `check` with FILE or --config FILE, several files, --json and --connect
(a live Redis and broker, and nothing listening); `replay` checking every path before it starts,
reading - as stdin and .gz files, and showing percent and ETA only on a terminal."""

import gzip
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile

import harness


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run(argv, env=None, stdin=None, timeout=60):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          stdin=stdin, timeout=timeout, check=False)


def usage_error(argv, prog, hint=None):
    """argv fails with exit 2 and exactly: one line naming prog, then the Try line."""
    p = run(argv)
    err = p.stderr.decode().splitlines()
    check(p.returncode == 2, "%s: exit %d, want 2: %s" % (argv[1:], p.returncode, err))
    check(len(err) == 2 and err[0].startswith(prog + ": ")
          and err[1] == "Try '%s --help' for more information." % prog,
          "%s: stderr %r" % (argv[1:], err))
    check(p.stdout == b"", "%s: stdout %r" % (argv[1:], p.stdout))
    if hint:
        check('(did you mean "%s"?)' % hint in err[0], "%s: no hint %r: %r" % (argv, hint, err))
    return err[0]


def usage_errors(daemon, ctl, config):
    for argv, prog, hint in [
            ([daemon], "propensityd", None),
            ([daemon, "chek", config], "propensityd", "check"),
            ([daemon, "replya"], "propensityd", "replay"),
            ([daemon, "rn"], "propensityd", "run"),
            ([daemon, "--bogus"], "propensityd", None),
            ([daemon, "run"], "propensityd run", None),
            ([daemon, "run", "--config"], "propensityd run", None),
            ([daemon, "check"], "propensityd check", None),
            ([daemon, "check", "--frobnicate", config], "propensityd check", None),
            ([daemon, "check", "--connect", "--timeout", "soon", config], "propensityd check",
             None),
            ([daemon, "replay", config], "propensityd replay", None),
            ([daemon, "replay", "--config", config], "propensityd replay", None),
            ([daemon, "replay", "-x", "--config", config, "e.jsonl"], "propensityd replay",
             None),
            ([daemon, "help", "nothing"], "propensityd", None),
            ([ctl], "propensityctl", None),
            ([ctl, "stauts"], "propensityctl", "status"),
            ([ctl, "wacth"], "propensityctl", "watch"),
            ([ctl, "--bogus", "status"], "propensityctl", None),
            ([ctl, "-t"], "propensityctl", None),
            ([ctl, "score"], "propensityctl score", None),
            ([ctl, "status", "extra"], "propensityctl status", None),
            ([ctl, "keygen", "extra"], "propensityctl keygen", None)]:
        usage_error(argv, prog, hint)
    print("usage errors: one line and the Try hint, did-you-mean for commands")

    for prog in (daemon, ctl):
        for flag in ("-V", "--version"):
            p = run([prog, flag])
            check(p.returncode == 0 and re.match(rb"propensity(d|ctl) \S+\n$", p.stdout),
                  "%s %s: %d %r" % (prog, flag, p.returncode, p.stdout))


def helps(daemon, ctl):
    """Every command listed by --help answers --help with exit 0 on stdout."""
    top = run([daemon, "--help"])
    check(top.returncode == 0 and b"COMMANDS" in top.stdout, "propensityd --help")
    text = top.stdout.decode()
    listed = re.findall(r"^    (\w[\w-]*)  +\S", text.split("COMMANDS\n", 1)[1].split("\n\n")[0],
                        re.MULTILINE)
    check(set(listed) >= {"run", "check", "replay"}, "commands listed: %r" % listed)
    for cmd in listed + ["help"]:
        for argv in ([daemon, cmd, "--help"], [daemon, cmd, "-h"], [daemon, "help", cmd]):
            p = run(argv)
            check(p.returncode == 0 and p.stdout.startswith(b"usage: propensityd")
                  and not p.stderr, "%s: %d %r %r" % (argv[1:], p.returncode, p.stdout[:80],
                                                      p.stderr))
    top = run([ctl, "--help"])
    check(top.returncode == 0, "propensityctl --help")
    section = top.stdout.decode().split("COMMANDS\n", 1)[1].split("\n\n")[0]
    listed = re.findall(r"^    (\w[\w-]*)", section, re.MULTILINE)
    check(len(listed) >= 12 and "watch" in listed and "keygen" in listed,
          "propensityctl commands listed: %r" % listed)
    for cmd in listed:
        for flag in ("--help", "-h"):
            p = run([ctl, cmd, flag])
            check(p.returncode == 0 and p.stdout.startswith(b"usage: propensityctl")
                  and not p.stderr, "ctl %s %s: %d %r %r" % (cmd, flag, p.returncode,
                                                               p.stdout[:80], p.stderr))
    print("--help of %d propensityd and %d propensityctl commands" % (4, len(listed)))


def check_command(daemon, root, tmp):
    example = os.path.join(root, "config", "example.yaml")
    other = os.path.join(root, "config", "examples", "click_through.yaml")
    env = dict(os.environ, STATE_DIRECTORY=tmp)
    a = run([daemon, "check", example], env)
    b = run([daemon, "check", "--config", example], env)
    c = run([daemon, "check", "-c", example], env)
    check(a.returncode == 0 and a.stdout == b.stdout == c.stdout,
          "check FILE and check --config FILE differ:\n%s\n%s" % (a.stdout, b.stdout))
    both = run([daemon, "check", example, "--config", other], env)
    out = both.stdout.decode()
    check(both.returncode == 0 and "%s: ok" % example in out and "%s: ok" % other in out,
          "two files: %d\n%s" % (both.returncode, out))
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("kafka:\n  topcs: [x]\n")
    mixed = run([daemon, "check", example, bad], env)
    check(mixed.returncode == 1 and "%s: ok" % example in mixed.stdout.decode()
          and "did you mean" in mixed.stderr.decode(), "a bad file among good ones")

    p = run([daemon, "check", "--json", example, bad, os.path.join(tmp, "absent.yaml")], env)
    check(p.returncode == 1, "check --json with a bad file: exit %d" % p.returncode)
    doc = json.loads(p.stdout)
    check(doc["ok"] is False and [f["ok"] for f in doc["files"]] == [True, False, False],
          "check --json: %r" % doc)
    good = doc["files"][0]
    check(good["path"] == example and good["errors"] == [] and good["kafka"]["topics"]
          and good["models"][0]["name"] and good["memory"]["weight_tables_bytes"] > 0,
          "check --json summary: %r" % good)
    check(any("topcs" in e and "did you mean" in e for e in doc["files"][1]["errors"]),
          "bad file's errors: %r" % doc["files"][1])
    check(any("cannot read" in e for e in doc["files"][2]["errors"]), doc["files"][2])
    check(p.stderr == b"", "check --json wrote to stderr: %r" % p.stderr)
    print("check: FILE, --config FILE, several files, --json")

    # --connect: nothing listening, then a real Redis and broker
    dead = dict(env, KAFKA_BROKERS="127.0.0.1:%d" % harness.free_port(),
                REDIS_URL="redis://127.0.0.1:%d/0" % harness.free_port())
    p = run([daemon, "check", "--connect", "--timeout", "700", example], dead, timeout=30)
    err = p.stderr.decode()
    check(p.returncode == 1 and "kafka \"%s\": no broker answered within 700 ms"
          % dead["KAFKA_BROKERS"] in err and "redis \"127.0.0.1:" in err
          and "cannot connect" in err, "check --connect, nothing there: %d\n%s"
          % (p.returncode, err))
    with harness.RedisServer() as rs, harness.Broker({"events": 3}) as broker:
        live = dict(env, KAFKA_BROKERS=broker.bootstrap, KAFKA_TOPIC="events", REDIS_URL=rs.url)
        p = run([daemon, "check", "--connect", example], live, timeout=30)
        out = p.stdout.decode()
        check(p.returncode == 0 and "kafka \"%s\": answered" % broker.bootstrap in out
              and "topic \"events\": 3 partition(s)" in out and "answered PONG" in out,
              "check --connect, live: %d\n%s%s" % (p.returncode, out, p.stderr.decode()))
        p = run([daemon, "check", "--connect", "--json", example], live, timeout=30)
        conn = json.loads(p.stdout)["files"][0]["connect"]
        check(p.returncode == 0 and conn["kafka"]["ok"] and conn["kafka"]["topics"] ==
              {"events": 3} and conn["redis"]["ok"] and conn["redis"]["version"],
              "check --connect --json: %r" % conn)
        missing = dict(live, KAFKA_TOPIC="no_such_topic")
        p = run([daemon, "check", "--connect", example], missing, timeout=30)
        check(p.returncode == 1 and "topic \"no_such_topic\": not found" in p.stdout.decode(),
              "missing topic: %d %s" % (p.returncode, p.stdout.decode()))
    print("check --connect: says what answered and what did not")


def strip_timing(doc):
    if isinstance(doc, dict):
        return {k: strip_timing(v) for k, v in doc.items()
                if "second" not in k and k != "throughput"}
    if isinstance(doc, list):
        return [strip_timing(v) for v in doc]
    return doc


def on_pty(argv, env):
    """Runs argv with stderr on a pseudo-terminal; (exit status, what it wrote there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout=60), out


def replay_command(daemon, root, tmp):
    config = os.path.join(root, "config", "example.yaml")
    env = dict(os.environ, STATE_DIRECTORY=tmp)
    events = os.path.join(tmp, "events.jsonl")
    data = harness.eventgen("--events", 60000, "--users", 500, "--seed", 5)
    with open(events, "wb") as f:
        f.write(data)
    gz = events + ".gz"
    with gzip.open(gz, "wb") as f:
        f.write(data)
    base = [daemon, "replay", "--config", config, "--json"]

    plain = run(base + [events], env)
    check(plain.returncode == 0, "replay: %s" % plain.stderr)
    want = strip_timing(json.loads(plain.stdout))
    check(want["events"] == 60000, "replay events %r" % want["events"])
    for what, argv, stdin in [("gz", base + [gz], None),
                              ("stdin", base + ["-"], events),
                              ("gzip on stdin", base + ["-"], gz)]:
        with open(stdin or os.devnull, "rb") as f:
            p = run(argv, env, stdin=f)
        check(p.returncode == 0 and strip_timing(json.loads(p.stdout)) == want,
              "replay of %s differs from the plain file: %s" % (what, p.stderr))
    print("replay: .gz, - and gzip on - give the plain file's report")

    # every path checked first: one line per problem, exit 1, no report
    missing = os.path.join(tmp, "missing.jsonl")
    for extra, want_err in [
            ([missing], 'cannot read events "%s": no such file or directory' % missing),
            ([events, missing], 'cannot read events "%s"' % missing),
            (["--scores", os.path.join(tmp, "no", "dir.jsonl"), events],
             'cannot write scores "%s"' % os.path.join(tmp, "no", "dir.jsonl")),
            (["--report", tmp, events], 'cannot write report "%s": it is a directory' % tmp),
            (["--examples", events, events], 'examples "%s" is also an input' % events),
            (["--baseline", missing, events], 'cannot read baseline "%s"' % missing),
            (["-", "-"], '"-" (stdin) is given 2 times')]:
        p = run([daemon, "replay", "--config", config] + extra, env)
        err = p.stderr.decode().splitlines()
        check(p.returncode == 1 and p.stdout == b"" and len(err) == 1
              and err[0].startswith("propensityd replay: ") and want_err in err[0],
              "replay %s: exit %d, stdout %r, stderr %r" % (extra, p.returncode,
                                                            p.stdout[:200], err))
    p = run([daemon, "replay", "--config", missing, events], env)
    check(p.returncode == 1 and p.stdout == b"" and b"NaN" not in p.stderr,
          "replay with a missing config: %d %r" % (p.returncode, p.stderr))
    check(os.path.getsize(events) == len(data), "the input was touched")
    print("replay: missing and unwritable paths refused before the run")

    # progress: percent and ETA on a terminal, nothing when stderr is not one
    for path in (events, gz):
        code, text = on_pty([daemon, "replay", "--config", config, path], env)
        check(code == 0, "replay on a tty: exit %d: %r" % (code, text[-300:]))
        check(re.search(rb"\r\S+: +\d+%, \d+ events, \d+ events/s, ETA \d+:\d\d", text),
              "no percent and ETA on a terminal: %r" % text[:300])
    p = run([daemon, "replay", "--config", config, events], env)
    check(p.returncode == 0 and p.stderr == b"", "progress without a tty: %r" % p.stderr[:200])
    print("replay: percent and ETA on a terminal only")


def main():
    daemon, ctl = harness.env_path("PD_DAEMON"), harness.env_path("PD_CTL")
    root = harness.source_root()
    tmp = tempfile.mkdtemp(prefix="pd-cli-")
    try:
        usage_errors(daemon, ctl, os.path.join(root, "config", "example.yaml"))
        helps(daemon, ctl)
        check_command(daemon, root, tmp)
        replay_command(daemon, root, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
