"""propensityd.yaml(5) and config/README.md document the same keys (either missing one fails),
the page renders without groff warnings and is installed; the bash completion of both programs
sources in a plain bash, completes their commands and options as their --help lists them, and
is installed by meson."""

import json
import os
import re
import shutil
import subprocess
import sys

import harness


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# README sections and the prefix their tables' keys take (as the page names them)
PREFIX = {"kafka:": "kafka.", "redis:": "redis.", "events:": "events.",
          "features:": "features.NAME.", "models:": "models.NAME.",
          "watermark:, users:, snapshot:, daemon:": ""}


def readme_keys(path):
    """Every key in a `key` or `kind` table of config/README.md, by its dotted name."""
    keys, section, header = set(), None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^## (.*)$", line)
            if m:
                section = m.group(1).strip()
                continue
            if not line.startswith("|"):
                header = None
                continue
            first = line.strip().strip("|").split("|")[0].strip()
            if header is None:
                header = first
                continue
            if header not in ("key", "kind") or first.startswith("---"):
                continue
            check(section in PREFIX, "README table of keys under an unknown section %r"
                  % section)
            for name in re.findall(r"`([^`]+)`", first):
                prefix = PREFIX[section]
                keys.add(name if not prefix and "." in name else prefix + name)
    return keys


def page_keys(path):
    """The keys the man page lists: the .B line of each .TP entry."""
    keys = set()
    with open(path, encoding="ascii") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == ".TP" and lines[i + 1].startswith(".B "):
            for k in lines[i + 1][3:].split(","):
                keys.add(k.strip().replace("\\-", "-"))
    return keys


def man_page(root):
    page = harness.env_path("PD_YAML_MAN")
    want, have = readme_keys(os.path.join(root, "config", "README.md")), page_keys(page)
    check(len(want) >= 100, "only %d keys found in config/README.md" % len(want))
    check(want - have == set(), "keys in config/README.md missing from propensityd.yaml(5): %s"
          % sorted(want - have))
    check(have - want == set(), "keys in propensityd.yaml(5) not in config/README.md: %s"
          % sorted(have - want))
    with open(page) as f:
        text = f.read()
    check(text.startswith(".TH PROPENSITYD.YAML 5 "), "page header: %r" % text[:60])
    for section in ("KAFKA", "REDIS", "MODELS", "RELOAD", "SEE ALSO"):
        check("\n.SH %s\n" % section in text, "no %s section" % section)
    groff = shutil.which("groff")
    if groff:
        p = subprocess.run([groff, "-man", "-ww", "-z", page], stderr=subprocess.PIPE,
                           timeout=60, check=False)
        check(p.returncode == 0 and not p.stderr, "groff warnings: %s" % p.stderr.decode()[:600])
    print("propensityd.yaml(5): the %d keys of config/README.md%s" % (
        len(want), ", renders cleanly" if groff else ""))


def complete(script, func, words, cword=None):
    """COMPREPLY of func for the command line words (the last one being completed)."""
    cword = len(words) - 1 if cword is None else cword
    quoted = " ".join("'%s'" % w.replace("'", "'\\''") for w in words)
    prog = ('source "$1" || exit 9\n'
            "COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE='%s'; COMP_POINT=${#COMP_LINE}\n"
            "%s\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n" % (quoted, cword, " ".join(words),
                                                           func))
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog, "bash", script],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                       check=False)
    check(p.returncode == 0 and not p.stderr, "%s %r: %d %s" % (func, words, p.returncode,
                                                                  p.stderr))
    return [x for x in p.stdout.splitlines() if x]


def help_options(argv):
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=30,
                         check=False).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[a-zA-Z])\b(?![a-z-])", out))


def completion(root, daemon, ctl):
    d = os.path.join(root, "deploy", "completions", "propensityd")
    c = os.path.join(root, "deploy", "completions", "propensityctl")
    for script in (d, c):
        p = subprocess.run(["bash", "--norc", "--noprofile", "-c", 'source "$1" && complete -p',
                            "bash", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30, check=False)
        name = os.path.basename(script)
        check(p.returncode == 0 and not p.stderr and "-F _%s %s" % (name, name) in p.stdout,
              "sourcing %s: %s %s" % (script, p.stdout, p.stderr))

    check(complete(d, "_propensityd", ["propensityd", "ch"]) == ["check"], "propensityd ch")
    check(sorted(complete(d, "_propensityd", ["propensityd", ""])) ==
          ["check", "help", "replay", "run"], "propensityd <tab>")
    check(complete(d, "_propensityd", ["propensityd", "replay", "--sc"]) == ["--scores"],
          "propensityd replay --sc")
    check("--connect" in complete(d, "_propensityd", ["propensityd", "check", "--c"]),
          "propensityd check --c")
    check(complete(d, "_propensityd", ["propensityd", "help", "rep"]) == ["replay"],
          "propensityd help rep")
    files = complete(d, "_propensityd", ["propensityd", "check", "--config",
                                         os.path.join(root, "config", "exam")])
    check(os.path.join(root, "config", "example.yaml") in files, "config file: %r" % files)
    # every option of each command's --help completes, and only those
    for cmd in ("run", "check", "replay"):
        want = help_options([daemon, cmd, "--help"])
        got = set(complete(d, "_propensityd", ["propensityd", cmd, "-"]))
        check(want == got, "propensityd %s: --help has %s, completion %s"
              % (cmd, sorted(want), sorted(got)))
    ctl_help = subprocess.run([ctl, "--help"], stdout=subprocess.PIPE, text=True,
                              check=False).stdout
    listed = set(re.findall(r"^    (\w[\w-]*)", ctl_help.split("COMMANDS\n", 1)[1]
                            .split("\n\n")[0], re.MULTILINE))
    got = set(complete(c, "_propensityctl", ["propensityctl", ""]))
    check(listed == got, "propensityctl commands: --help %s, completion %s"
          % (sorted(listed), sorted(got)))
    want = help_options([ctl, "--help"]) - {"-e", "-f", "-k"} | {"-e", "-f", "-k"}
    got = set(complete(c, "_propensityctl", ["propensityctl", "-"]))
    check(want == got, "propensityctl options: --help %s, completion %s"
          % (sorted(want), sorted(got)))
    check(complete(c, "_propensityctl", ["propensityctl", "--json", "sta"]) == ["status"],
          "propensityctl --json sta")
    check(complete(c, "_propensityctl", ["propensityctl", "-e", "ipc:///x", "wa"]) == ["watch"],
          "an option's value is not the command")
    check(complete(c, "_propensityctl", ["propensityctl", "log-level", "w"]) == ["warning"],
          "propensityctl log-level w")
    print("bash completion: both programs' commands and options, as their --help")


def installed(build_root):
    p = subprocess.run(["meson", "introspect", "--installed", build_root],
                       stdout=subprocess.PIPE, text=True, timeout=60, check=False)
    check(p.returncode == 0, "meson introspect --installed failed")
    dests = list(json.loads(p.stdout).values())
    for want in ("/man5/propensityd.yaml.5", "/bash-completion/completions/propensityd",
                 "/bash-completion/completions/propensityctl"):
        check(any(d.endswith(want) for d in dests), "meson install lacks %s: %s"
              % (want, sorted(dests)))
    print("installed: the man page and both completions")


def main():
    root = harness.source_root()
    man_page(root)
    completion(root, harness.env_path("PD_DAEMON"), harness.env_path("PD_CTL"))
    installed(harness.env_path("PD_BUILD_ROOT"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
