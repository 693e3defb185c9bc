"""The template unit propensityd@.service and what both units do on a fresh install.

Declared in deploy/meson.build (suite integration). It checks (the systemd-analyze parts are
skipped where systemd-analyze is missing):
  - both units skip, rather than fail, while their pipeline file is missing:
    ConditionPathExists= names exactly the file ExecStart= passes to --config, and a comment
    above it says how to create it from pipeline.yaml.example
  - the template runs sysconfdir/propensityd/%i.yaml with StateDirectory= and
    RuntimeDirectory= of its own per instance and a per-instance EnvironmentFile=, and keeps
    every other setting of propensityd.service (type, watchdog, reload, hardening) unchanged
  - `meson install` installs it
  - `systemd-analyze verify` accepts an instance (propensityd@orders.service) and prints
    nothing, and `systemd-analyze security` rates the instance at most 2.0 like the plain unit
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


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def settings(text):
    """[(key, value)] of the unit's non-comment lines, in order."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.append((k, v))
    return out


def check_condition(name, text):
    exec_cfg = re.search(r"^ExecStart=\S+ --config (\S+)$", text, re.MULTILINE)
    check(exec_cfg, "%s: no ExecStart=... --config FILE" % name)
    cond = re.search(r"^ConditionPathExists=(\S+)$", text, re.MULTILINE)
    check(cond, "%s: no ConditionPathExists=: a fresh install would fail to start" % name)
    check(cond.group(1) == exec_cfg.group(1), "%s: ConditionPathExists=%s but --config %s"
          % (name, cond.group(1), exec_cfg.group(1)))
    before = text[:cond.start()].splitlines()[-5:]
    check(any("pipeline.yaml.example" in l for l in before if l.startswith("#")),
          "%s: no comment above ConditionPathExists= saying what to create" % name)
    return exec_cfg.group(1)


def main():
    build = harness.env_path("PD_BUILD_ROOT")
    with open(os.path.join(build, "deploy", "propensityd.service")) as f:
        plain = f.read()
    with open(os.path.join(build, "deploy", "propensityd@.service")) as f:
        template = f.read()

    plain_cfg = check_condition("propensityd.service", plain)
    tmpl_cfg = check_condition("propensityd@.service", template)
    check(plain_cfg.endswith("/propensityd/pipeline.yaml"), plain_cfg)
    check(tmpl_cfg == plain_cfg.replace("pipeline.yaml", "%i.yaml"), tmpl_cfg)

    ts = settings(template)
    for want in (("StateDirectory", "propensityd/%i"), ("RuntimeDirectory", "propensityd/%i")):
        check(want in ts, "the template lacks %s=%s" % want)
    check(("EnvironmentFile", "-" + os.path.dirname(plain_cfg) + "/%i.env") in ts,
          "the template has no per-instance EnvironmentFile=: %s" % ts)
    # everything else as in the plain unit
    differing = {"Description", "ExecStart", "ConditionPathExists", "StateDirectory",
                 "RuntimeDirectory", "EnvironmentFile"}
    same_plain = [kv for kv in settings(plain) if kv[0] not in differing]
    same_tmpl = [kv for kv in ts if kv[0] not in differing]
    check(same_plain == same_tmpl, "the template drifted from propensityd.service:\n%s"
          % "\n".join(sorted(set(same_plain) ^ set(same_tmpl))))
    print("template unit: %d settings, %d as in propensityd.service" % (len(ts), len(same_tmpl)))

    with open(os.path.join(build, "meson-info", "intro-installed.json")) as f:
        names = {os.path.basename(p) for p in json.load(f).values()}
    check("propensityd@.service" in names, "meson install does not install the template")

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("systemd-analyze not found: unit verification skipped")
        return 77
    tmp = tempfile.mkdtemp(prefix="pd-deploy-units-")
    try:
        local = re.sub(r"^ExecStart=\S+", "ExecStart=" + harness.env_path("PD_DAEMON"),
                       template, flags=re.MULTILINE)
        with open(os.path.join(tmp, "propensityd@.service"), "w") as f:
            f.write(local)
        # an instance is verified through its template in the same directory
        instance = os.path.join(tmp, "propensityd@orders.service")
        os.symlink("propensityd@.service", instance)
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
        res = subprocess.run(args + [instance], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env, timeout=60,
                             check=False)
        print("systemd-analyze verify propensityd@orders.service: exit %d%s"
              % (res.returncode, (":\n" + res.stdout) if res.stdout else ""))
        check(res.returncode == 0 and not res.stdout.strip(), "verify complained")
        res = subprocess.run([analyze, "security", "--offline=yes", instance],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=60, check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", res.stdout)
        check(m, "no overall exposure in:\n" + res.stdout[-2000:])
        print("systemd-analyze security: %s %s" % (m.group(1), m.group(2)))
        check(float(m.group(1)) <= MAX_EXPOSURE, "exposure %s is above %.1f"
              % (m.group(1), MAX_EXPOSURE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("deploy units test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
