"""The systemd unit and what `meson install` installs.

What it checks (skipped, exit 77, where systemd-analyze is missing):
  - `systemd-analyze verify` accepts deploy/propensityd.service as configured by meson (with
    ExecStart pointed at the built binary, which verify requires to exist, and the man pages
    the unit documents on MANPATH) and prints nothing
  - `systemd-analyze security --offline=yes` rates it at most 2.0 ("OK"); the score is printed
  - the unit has what the issue asks for: Type=notify, WatchdogSec, ExecReload with SIGHUP,
    Restart=on-failure, StateDirectory, RuntimeDirectory, EnvironmentFile, DynamicUser and
    the hardening settings
  - the install plan holds both binaries, the unit, the example config, the env example and
    the man pages; `propensityd --help` and `propensityctl --help` read like man pages
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import harness

MAX_EXPOSURE = 2.0
REQUIRED = [
    r"^Type=notify$", r"^WatchdogSec=\d+", r"^ExecReload=.*kill -HUP \$MAINPID$",
    r"^Restart=on-failure$", r"^StateDirectory=propensityd$", r"^RuntimeDirectory=propensityd$",
    r"^EnvironmentFile=-", r"^DynamicUser=yes$", r"^NoNewPrivileges=yes$",
    r"^ProtectSystem=strict$", r"^ProtectHome=yes$", r"^PrivateTmp=yes$",
    r"^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$", r"^#\s+MemoryMax=\d",  # guidance
]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    build = os.environ.get("PD_BUILD_ROOT")
    check(build, "PD_BUILD_ROOT is not set; run through meson test")
    unit_path = os.path.join(build, "deploy", "propensityd.service")
    with open(unit_path) as f:
        unit = f.read()
    for pattern in REQUIRED:
        check(re.search(pattern, unit, re.MULTILINE), "the unit lacks %s" % pattern)

    # ---- install plan
    with open(os.path.join(build, "meson-info", "intro-installed.json")) as f:
        installed = json.load(f).values()
    names = {os.path.basename(p) for p in installed}
    for want in ("propensityd", "propensityctl", "propensityd.service", "pipeline.yaml.example",
                 "propensityd.env.example", "propensityd.8", "propensityctl.1"):
        check(want in names, "meson install does not install %s: %s" % (want, sorted(names)))
    for binary in (harness.env_path("PD_DAEMON"), harness.env_path("PD_CTL")):
        out = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS"):
            check(re.search(r"^%s$" % section, out, re.MULTILINE),
                  "%s --help has no %s section" % (binary, section))

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("systemd-analyze not found: unit verification skipped")
        return 77
    tmp = tempfile.mkdtemp(prefix="pd-ops-systemd-")
    try:
        exec_line = re.search(r"^ExecStart=(\S+)", unit, re.MULTILINE).group(1)
        local = unit.replace("ExecStart=" + exec_line,
                             "ExecStart=" + harness.env_path("PD_DAEMON"))
        path = os.path.join(tmp, "propensityd.service")
        with open(path, "w") as f:
            f.write(local)
        env = dict(os.environ)
        args = [analyze, "verify"]
        if shutil.which("man"):
            for sec, page in (("8", "propensityd.8"), ("1", "propensityctl.1")):
                os.makedirs(os.path.join(tmp, "man", "man" + sec), exist_ok=True)
                shutil.copy(os.path.join(harness.source_root(), "deploy", page),
                            os.path.join(tmp, "man", "man" + sec, page))
            env["MANPATH"] = os.path.join(tmp, "man")
        else:
            args.append("--man=no")
        res = subprocess.run(args + [path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env, timeout=60, check=False)
        print("systemd-analyze verify: exit %d%s" % (res.returncode,
                                                     (":\n" + res.stdout) if res.stdout else ""))
        check(res.returncode == 0 and not res.stdout.strip(), "verify complained")
        res = subprocess.run([analyze, "security", "--offline=yes", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=60, check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", res.stdout)
        check(m, "no overall exposure in:\n" + res.stdout[-2000:])
        score = float(m.group(1))
        print("systemd-analyze security: %.1f %s" % (score, m.group(2)))
        print("\n".join(l for l in res.stdout.splitlines() if l.startswith("✗")))
        check(score <= MAX_EXPOSURE, "exposure %.1f is above %.1f" % (score, MAX_EXPOSURE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops systemd test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
