"""The command line the reference scripts share: write the generated fixtures to a file, or
check (--check FILE) that a committed fixture file is exactly what the script generates now,
naming the first line that drifted."""

import sys


def main(argv, generate, doc, script, stdout_without_args=False):
    """argv without the program name; generate() returns the fixture text."""
    if not argv and stdout_without_args:
        sys.stdout.write(generate())
        return 0
    if len(argv) == 1 and argv[0] != "--check":
        with open(argv[0], "w") as f:
            f.write(generate())
        return 0
    if len(argv) == 2 and argv[0] == "--check":
        a = generate().splitlines()
        with open(argv[1]) as f:
            b = f.read().splitlines()
        if a == b:
            return 0
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                sys.stderr.write("%s:%d differs from the reference output:\n  fixture:   %s\n"
                                 "  reference: %s\n" % (argv[1], i + 1, y, x))
                break
        else:
            sys.stderr.write("%s: %d lines, the reference has %d\n" % (argv[1], len(b), len(a)))
        sys.stderr.write("rerun %s to regenerate the fixtures\n" % script)
        return 1
    sys.stderr.write(doc)
    return 2
