#!/usr/bin/env python3
"""Writes propensityd.yaml(5) from config/README.md, the one description of the pipeline
language, so the man page says what the README says: every table of keys becomes a list of
keys under their full dotted names (kafka.brokers, models.NAME.alpha), the prose around them
paragraphs, and the module layout (for developers) is left out.

usage: gen_yaml_man.py README.md OUT.5 [VERSION]"""

import re
import sys

# README sections (## headings) and the prefix of the keys of their tables
SECTION_PREFIX = {
    "kafka:": "kafka.",
    "redis:": "redis.",
    "events:": "events.",
    "features:": "features.NAME.",
    "models:": "models.NAME.",
    "watermark:, users:, snapshot:, daemon:": "",
}


def roff_escape(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # roff input is ASCII: anything else as groff's \[uXXXX]
    return "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)


def inline(text):
    """Markdown inline markup to roff: `code` and **bold** bold, *it* italic."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*", text):
        out.append(roff_escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + roff_escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + roff_escape(m.group(2).replace("`", "")) + "\\fR")
        else:
            out.append("\\fI" + roff_escape(m.group(3)) + "\\fR")
        pos = m.end()
    out.append(roff_escape(text[pos:]))
    line = "".join(out)
    # a line that starts with . or ' would be a request
    return "\\&" + line if line[:1] in (".", "'") else line


def cells(row):
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)]


def table_keys(first_cell, prefix):
    """The keys a table row documents: `a` / `b_file` gives both, dotted names keep theirs."""
    names = re.findall(r"`([^`]+)`", first_cell)
    keys = []
    for n in names:
        keys.append(n if "." in n and not prefix else prefix + n)
    return keys


def convert(readme, version):
    lines = readme.splitlines()
    out = [
        '.TH PROPENSITYD.YAML 5 "" "propensityd %s" "File Formats"' % version,
        ".SH NAME",
        "propensityd.yaml \\- the pipeline configuration of propensityd",
        ".SH SYNOPSIS",
        ".I /etc/propensityd/pipeline.yaml",
        ".br",
        ".I /etc/propensityd/NAME.yaml",
        ".SH DESCRIPTION",
        "One YAML file says where events come from, what",
        ".B propensityd",
        "remembers per user, which features it builds, which models it learns and where scores",
        "go.",
        ".B propensityd check",
        ".I FILE",
        "validates it and prints every problem with its file, line and column, or a summary;",
        ".B propensityd run",
        "and",
        ".B replay",
        "read it with",
        ".BR \\-\\-config .",
        "SIGHUP makes the daemon read it again (see RELOAD).",
        ".PP",
        "This page is generated from the project's config/README.md.",
    ]
    section, prefix, i = "", None, 0
    in_intro = True
    while i < len(lines):
        line = lines[i]
        if line.startswith("# "):
            i += 1
            continue
        m = re.match(r"^(#{2,3}) (.*)$", line)
        if m:
            in_intro = False
            title = m.group(2).strip()
            if m.group(1) == "##":
                section = title
                prefix = SECTION_PREFIX.get(title)
                out.append(".SH " + roff_escape(title.rstrip(":").upper()))
            else:
                out.append(".SS " + inline(title))
            i += 1
            continue
        if in_intro:
            i += 1  # the README's opening is about the code; DESCRIPTION above replaces it
            continue
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            i += 1
            out.append(".PP")
            out.append(".nf")
            out.append(".RS 4")
            out.extend(("\\&" + roff_escape(b)) if b else "" for b in block)
            out.append(".RE")
            out.append(".fi")
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            header, body = rows[0], [r for r in rows[2:]]
            if header[0] not in ("key", "kind"):
                continue
            for r in body:
                keys = table_keys(r[0], prefix or "")
                if not keys:
                    continue
                out.append(".TP")
                out.append(".B " + roff_escape(", ".join(keys)))
                facts = []
                for name, value in zip(header[1:], r[1:]):
                    if value and value != "":
                        facts.append((name, value))
                text = "; ".join("%s: %s" % (n, v) if n not in ("notes", "what it is", "value")
                                 else v for n, v in facts)
                out.append(inline(text.replace("\\|", "|")))
            continue
        if re.match(r"^\s*- ", line):
            item = [re.sub(r"^\s*- ", "", line)]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i].strip())
                i += 1
            out.append(".IP \\(bu 2")
            out.extend(inline(x) for x in item)
            continue
        if not line.strip():
            if out[-1] != ".PP":
                out.append(".PP")
            i += 1
            continue
        out.append(inline(line))
        i += 1
    out += [
        ".SH SEE ALSO",
        ".BR propensityd (8),",
        ".BR propensityctl (1)",
    ]
    # no empty paragraphs before headings
    cleaned = []
    for line in out:
        if line.startswith((".SH", ".SS", ".TP", ".IP", ".PP")) and cleaned and \
                cleaned[-1] == ".PP":
            cleaned.pop()
        cleaned.append(line)
    return "\n".join(cleaned) + "\n"


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__.split("\n\n")[-1] + "\n")
        return 2
    with open(argv[1], encoding="utf-8") as f:
        readme = f.read()
    text = convert(readme, argv[3] if len(argv) == 4 else "")
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
