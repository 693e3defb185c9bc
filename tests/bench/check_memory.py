#!/usr/bin/python3
"""Bytes per weight and per user from the text of `propensityd check FILE`, for tests/bench/run.

Accepts both forms check has printed: "2^22 weights x 16 B = 64.0 MiB" and the older
"2^22 weights (64.0 MiB)" (bytes per weight derived), and "~360 B per active user". Says so
plainly when check does not report a figure; never guesses one.
Usage: check_memory.py CHECK_OUTPUT.txt
"""

import re
import sys

UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def main(path):
    with open(path) as f:
        text = f.read()
    out = []
    m = re.search(r"2\^(\d+) weights x (\d+) B\b", text)
    if m:
        out.append("%s bytes per weight (2^%s weights)" % (m.group(2), m.group(1)))
    else:
        m = re.search(r"2\^(\d+) weights \(([\d.]+) (B|KiB|MiB|GiB|TiB)\)", text)
        if m:
            bpw = float(m.group(2)) * UNITS[m.group(3)] / (1 << int(m.group(1)))
            out.append("%.1f bytes per weight (2^%s weights, %s %s)"
                       % (bpw, m.group(1), m.group(2), m.group(3)))
        else:
            out.append("bytes per weight: not reported by check")
    m = re.search(r"~?([\d.]+) B per (?:active )?user", text)
    if m:
        out.append("%s bytes per user (estimate)" % m.group(1))
    elif "no per-user state kept" in text:
        out.append("no per-user state (the pipeline reads no user history)")
    else:
        out.append("bytes per user: not reported by check")
    m = re.search(r"pending examples: up to (\d+) B each", text)
    if m:
        out.append("pending examples up to %s bytes each" % m.group(1))
    print("; ".join(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
