#!/usr/bin/env python3
"""Writes the values table of charts/maos/README.md from charts/maos/values.yaml.

Each value is described by the `# --` comment above it (helm-docs' convention); the table
between the README's `<!-- values -->` markers is rewritten. With --check, fails (exit 1)
when the README is out of date or a value has no description, instead of writing.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts/maos/values.yaml"
README = ROOT / "charts/maos/README.md"
BEGIN, END = "<!-- values -->", "<!-- /values -->"


def described():
    """(dotted key, description) for every key with a `# --` comment, in file order."""
    out, stack, comment = [], [], None
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w]*):", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        stack = stack[:depth] + [match.group(2)]
        if comment is not None:
            out.append((".".join(stack), " ".join(comment)))
        comment = None
    return out


def lookup(values, key):
    for part in key.split("."):
        values = values[part]
    return values


def leaves(values, prefix=""):
    """Every key whose value is not a non-empty map: the ones that need a description."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.endswith(("resources", "SecurityContext", "securityContext", "labels")):
            yield from leaves(value, path + ".")
        else:
            yield path


def table():
    values = yaml.safe_load(VALUES.read_text())
    docs = described()
    have = {k for k, _ in docs}
    missing = [k for k in leaves(values) if k not in have and not any(k.startswith(h + ".") for h in have)]
    rows = ["| Value | Default | Description |", "|---|---|---|"]
    for key, text in docs:
        default = json.dumps(lookup(values, key))
        rows.append(f"| `{key}` | `{default}` | {text} |")
    return "\n".join(rows) + "\n", missing


def main():
    text, missing = table()
    if missing:
        print(f"values without a `# --` description: {', '.join(missing)}", file=sys.stderr)
        return 1
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"{README} lacks the {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{text}{END}{tail}"
    if "--check" in sys.argv[1:]:
        if new != readme:
            print("charts/maos/README.md is out of date: run scripts/gen-chart-readme.py", file=sys.stderr)
            return 1
        print("charts/maos/README.md documents every value")
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
