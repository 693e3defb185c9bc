"""propensityd check: the example pipelines pass with a summary, every broken config of the
corpus fails with exit status 1 and exactly its expected file:line:column messages."""

import glob
import os
import subprocess
import sys

import harness


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run_check(path, env):
    return subprocess.run([harness.env_path("PD_DAEMON"), "check", path], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=30, check=False)


def main():
    root = harness.source_root()
    env = dict(os.environ)
    # the corpus's conventions (tests/configs/bad/README.md)
    env.update({"PD_TEST_SECRET": "s3cret-value", "PD_TEST_BROKERS": "broker-1:9092",
                "PD_TEST_EMPTY": ""})
    for name in list(env):
        if name.startswith("PD_TEST_UNSET"):
            del env[name]

    good = [os.path.join(root, "config", "example.yaml")] + \
        sorted(glob.glob(os.path.join(root, "config", "examples", "*.yaml")))
    for path in good:
        proc = run_check(path, env)
        out = proc.stdout.decode()
        check(proc.returncode == 0, "%s: exit %d\n%s" % (path, proc.returncode,
                                                         proc.stderr.decode()))
        for want in (": ok", "models:", "hash collisions", "weight tables", "per active user"):
            check(want in out, "%s: summary lacks %r:\n%s" % (path, want, out))
    print("%d example pipelines pass" % len(good))

    bad = sorted(glob.glob(os.path.join(root, "tests", "configs", "bad", "*.yaml")))
    check(len(bad) >= 25, "only %d broken configs" % len(bad))
    os.chdir(os.path.join(root, "tests", "configs", "bad"))  # relative *_file paths
    for path in bad:
        name = os.path.basename(path)
        proc = run_check(name, env)
        check(proc.returncode == 1, "%s: exit %d, expected 1" % (name, proc.returncode))
        with open(name[:-5] + ".expected") as f:
            want = [line.rstrip("\n").replace("{file}", name) for line in f if line.strip()]
        got = proc.stderr.decode().splitlines()
        check(got[:len(want)] == want, "%s:\nexpected %s\ngot      %s" % (name, want, got))
        check(got[len(want):] == ["%s: %d error%s" % (name, len(want),
                                                      "" if len(want) == 1 else "s")],
              "%s: trailer %s" % (name, got[len(want):]))
        check(b"s3cret-value" not in proc.stdout + proc.stderr, "%s leaks the secret" % name)
    print("%d broken configs refused with their exact messages" % len(bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
