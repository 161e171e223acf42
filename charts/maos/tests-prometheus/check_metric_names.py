#!/usr/bin/env python3
"""Checks that the chart's alert rules and Grafana dashboard use only metrics MAOS exports.

Run by scripts/check-prometheus.sh; standard library only (PyYAML is used when present, else a
small reader of the rule file's `expr:` blocks).

The metric names come from the code: every Rust file under operator/src, agent-runner/src and
core/src that builds a `Registry::with_prefix(...)` is read for its `register("name", "help",
binding.clone())` calls, the binding's type (Counter -> `<name>_total`, Gauge -> `<name>`,
Histogram -> `_bucket`, `_sum`, `_count`) and the `EncodeLabelSet` struct of a `Family<...>`
(its fields are the labels). Scrape files given with --scrape (a real `/metrics` body, as
tests/e2e/tests/metrics_lint.rs saves them) are parsed too; their metric names must agree with
the code's, and then the names are checked against what a running operator or agent really
served.

Checks, each printed as PASS or FAIL:
  * every `maos_*` name in the rules (expressions and annotations) and in the dashboard
    (panel targets and template queries) is a series name MAOS exports;
  * every label in a selector `maos_x{label=...}` is one of that metric's labels or a label a
    ServiceMonitor/PodMonitor scrape adds (namespace, pod, ...), and every literal value
    (`state="busy"`) is a string the code spells;
  * every label in `by (...)`, `on (...)`, `without`, `ignoring`, `group_left/right` is a label
    of a metric in the same expression, or a target label;
  * the dashboard: schemaVersion >= 36, a `datasource` variable of type datasource (prometheus)
    that every panel and target uses as `${datasource}`, a `namespace` variable, unique panel
    ids, every panel has a query;
  * with --promtool: the dashboard's queries (Grafana variables replaced) parse as PromQL, by
    `promtool check rules` on a rule file made of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Labels the scrape adds to every series of a target (prometheus-operator's ServiceMonitor and
# PodMonitor, or a plain config's job/instance).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "endpoint", "container"}
SOURCE_DIRS = ["operator/src", "agent-runner/src", "core/src"]

REGISTER = re.compile(
    r'\.register\(\s*"(?P<name>[a-z_][a-z0-9_]*)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*(?P<binding>\w+)\.clone\(\)',
    re.S,
)
PREFIX = re.compile(r'Registry::with_prefix\(\s*"(?P<prefix>[a-z_][a-z0-9_]*)"\s*\)')
LET = re.compile(r"\blet\s+(?:mut\s+)?(?P<binding>\w+)\s*=\s*(?P<expr>[^;]*);", re.S)
STRUCT = re.compile(r"struct\s+(?P<name>\w+)\s*\{(?P<body>[^}]*)\}", re.S)
FIELD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:r#)?(?P<field>[a-z_][a-z0-9_]*)\s*:", re.M)
STRING_LITERAL = re.compile(r'"([A-Za-z_][A-Za-z0-9_.-]*)"')

METRIC = re.compile(r"\bmaos_[a-z0-9_]*[a-z0-9]\b")
SELECTOR = re.compile(r"\b(?P<metric>maos_[a-z0-9_]+)\s*\{(?P<matchers>[^}]*)\}")
MATCHER = re.compile(r'(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^)]*)\)")


class Metric:
    def __init__(self, family: str, kind: str, labels: set[str], origin: str):
        self.family, self.kind, self.labels, self.origin = family, kind, labels, origin

    def series(self) -> dict[str, set[str]]:
        """Series name -> its labels, as the OpenMetrics encoder writes them."""
        if self.kind == "counter":
            return {self.family + "_total": set(self.labels)}
        if self.kind == "histogram":
            return {
                self.family + "_bucket": self.labels | {"le"},
                self.family + "_sum": set(self.labels),
                self.family + "_count": set(self.labels),
            }
        return {self.family: set(self.labels)}


def metrics_from_source(root: Path) -> tuple[dict[str, Metric], set[str]]:
    """The metrics the code registers, and every identifier-like string literal it spells."""
    metrics: dict[str, Metric] = {}
    literals: set[str] = set()
    for directory in SOURCE_DIRS:
        for path in sorted((root / directory).rglob("*.rs")):
            text = path.read_text(encoding="utf-8")
            literals.update(STRING_LITERAL.findall(text))
            prefix = PREFIX.search(text)
            if not prefix:
                continue
            structs = {
                m["name"]: {f["field"] for f in FIELD.finditer(m["body"])}
                for m in STRUCT.finditer(text)
            }
            bindings = {m["binding"]: m["expr"] for m in LET.finditer(text)}
            rel = path.relative_to(root)
            for reg in REGISTER.finditer(text):
                expr = bindings.get(reg["binding"])
                if expr is None:
                    raise SystemExit(f"{rel}: cannot find `let {reg['binding']} = ...` for {reg['name']}")
                kinds = re.findall(r"\b(Counter|Gauge|Histogram)\b", expr)
                if not kinds:
                    raise SystemExit(f"{rel}: cannot tell the type of {reg['binding']}: {expr.strip()}")
                labels: set[str] = set()
                family = re.search(r"Family\s*::\s*<\s*(\w+)\s*,", expr)
                if family:
                    if family[1] not in structs:
                        raise SystemExit(f"{rel}: no struct {family[1]} for the labels of {reg['name']}")
                    labels = structs[family[1]]
                name = f"{prefix['prefix']}_{reg['name']}"
                metrics[name] = Metric(name, kinds[0].lower(), labels, str(rel))
    return metrics, literals


def metrics_from_scrape(path: Path) -> dict[str, Metric]:
    """The families a `/metrics` body declares (`# TYPE`), with the labels of its series."""
    metrics: dict[str, Metric] = {}
    types: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            metrics[name] = Metric(name, kind.strip(), set(), str(path))
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s", line)
            if not match:
                continue
            series, labels = match[1], match[2] or ""
            family = next(
                (f for f in (series, re.sub(r"_(total|bucket|sum|count|created)$", "", series)) if f in types),
                None,
            )
            if family:
                metrics[family].labels |= {
                    m["label"] for m in MATCHER.finditer(labels) if m["label"] != "le"
                }
    return metrics


def rule_texts(path: Path) -> tuple[list[tuple[str, str]], str]:
    """(rule name, expression) of every rule, and the annotation text to scan for names."""
    try:
        import yaml  # type: ignore
    except ImportError:
        yaml = None
    if yaml is not None:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        exprs, notes = [], []
        for group in doc["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                exprs.append((name, str(rule["expr"])))
                notes.extend(str(v) for v in (rule.get("annotations") or {}).values())
        return exprs, "\n".join(notes)
    # Fallback: `- alert: X` / `record: X`, then `expr: |` and its more-indented lines.
    exprs, name, lines = [], "?", path.read_text(encoding="utf-8").splitlines()
    notes = "\n".join(l for l in lines if not l.lstrip().startswith("#") and "expr:" not in l)
    i = 0
    while i < len(lines):
        line = lines[i]
        head = re.match(r"\s*-?\s*(?:alert|record):\s*(\S+)", line)
        if head:
            name = head[1]
        expr = re.match(r"(\s*)expr:\s*(.*)$", line)
        if expr:
            indent, rest = len(expr[1]), expr[2].strip()
            if rest in ("|", "|-", ">", ">-"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i])
                    i += 1
                exprs.append((name, "\n".join(body)))
                continue
            exprs.append((name, rest))
        i += 1
    return exprs, notes


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, query) of every panel target and every query variable."""
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if "expr" in target:
                    out.append((f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            out.append((f"variable {var.get('name')}", query or ""))
    return out


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    for var, value in [
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("${namespace}", ".*"),
        ("$namespace", ".*"),
        ("${agent_namespace}", ".*"),
        ("$agent_namespace", ".*"),
    ]:
        expr = expr.replace(var, value)
    label_values = re.fullmatch(r"\s*label_values\((?P<metric>[^,]+),\s*\w+\)\s*", expr)
    if label_values:
        expr = label_values["metric"]
    return expr


def show(path: Path, root: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


class Report:
    def __init__(self):
        self.failures = 0
        self.passes = 0

    def check(self, title: str, problems: list[str]):
        if problems:
            self.failures += 1
            print(f"FAIL {title}")
            for p in problems:
                print(f"     {p}")
        else:
            self.passes += 1
            print(f"PASS {title}")


def check_expression(where: str, expr: str, series: dict[str, set[str]], literals: set[str]) -> list[str]:
    problems = []
    names = set(METRIC.findall(expr))
    for name in sorted(names - series.keys()):
        problems.append(f"{where}: {name} is not a metric MAOS exports")
    known = set().union(*(series[n] for n in names if n in series)) if names else set()
    for sel in SELECTOR.finditer(expr):
        metric = sel["metric"]
        if metric not in series:
            continue
        for m in MATCHER.finditer(sel["matchers"]):
            label, op, value = m["label"], m["op"], m["value"]
            if label in TARGET_LABELS:
                continue
            if label not in series[metric]:
                problems.append(f"{where}: {metric} has no label {label!r} (it has {sorted(series[metric]) or 'none'})")
                continue
            if "$" in value or label == "le":
                continue
            parts = value.split("|") if op in ("=~", "!~") else [value]
            for part in parts:
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", part) and part not in literals:
                    problems.append(f'{where}: {metric}{{{label}{op}"{value}"}}: the code never spells "{part}"')
    for group in GROUPING.finditer(expr):
        for label in filter(None, (l.strip() for l in group["labels"].split(","))):
            if label not in TARGET_LABELS and label not in known:
                problems.append(f"{where}: grouping label {label!r} is on none of {sorted(names)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[3])
    parser.add_argument("--rules", type=Path)
    parser.add_argument("--dashboard", type=Path)
    parser.add_argument("--scrape", type=Path, action="append", default=[], help="a /metrics body (repeatable)")
    parser.add_argument("--promtool", help="promtool, to parse the dashboard's queries")
    args = parser.parse_args()
    root = args.root
    rules_path = args.rules or root / "charts/maos/files/prometheus-rules.yaml"
    dash_path = args.dashboard or root / "charts/maos/files/grafana-dashboard.json"
    report = Report()

    source, literals = metrics_from_source(root)
    report.check(
        f"metric registrations found in the code: {len(source)} "
        f"({', '.join(sorted({m.origin for m in source.values()}))})",
        [] if len(source) >= 10 else [f"only {len(source)} found: has the registration code changed shape?"],
    )
    authority = dict(source)
    for scrape in args.scrape:
        scraped = metrics_from_scrape(scrape)
        # The registry the scrape comes from: the one (by file) sharing the most names with it.
        origins = {m.origin for m in source.values()}
        origin = max(origins, key=lambda o: len({n for n, m in source.items() if m.origin == o} & scraped.keys()))
        mine = {n: m for n, m in source.items() if m.origin == origin}
        problems = [f"{n} ({scraped[n].kind}) is served but not found in {origin}" for n in sorted(scraped.keys() - mine.keys())]
        problems += [
            f"{n}: the code says {mine[n].kind}, the scrape says {scraped[n].kind}"
            for n in sorted(scraped.keys() & mine.keys()) if mine[n].kind != scraped[n].kind
        ]
        problems += [
            f"{n}: series labelled {sorted(scraped[n].labels - mine[n].labels)} the code does not declare"
            for n in sorted(scraped.keys() & mine.keys()) if scraped[n].labels - mine[n].labels
        ]
        # prometheus-client leaves out a Family that has no series yet, so fewer is normal.
        unserved = sorted(mine.keys() - scraped.keys())
        if unserved:
            print(f"info: {show(scrape, root)} has no series yet of {', '.join(unserved)}")
        report.check(f"scrape {show(scrape, root)}: its {len(scraped)} metric families are registered in {origin}, same types and labels", problems)
        for n, m in scraped.items():
            authority[n] = Metric(n, m.kind, (m.labels | source[n].labels) if n in source else m.labels, str(scrape))
    series: dict[str, set[str]] = {}
    for metric in authority.values():
        series.update(metric.series())

    exprs, notes = rule_texts(rules_path)
    problems = []
    for name, expr in exprs:
        problems += check_expression(f"rule {name}", expr, series, literals)
    for name in sorted(set(METRIC.findall(notes)) - series.keys()):
        problems.append(f"annotations: {name} is not a metric MAOS exports")
    used_rules = set().union(*(set(METRIC.findall(e)) for _, e in exprs))
    report.check(f"{show(rules_path, root)}: {len(exprs)} rules use {len(used_rules)} real series names", problems)

    dash = json.loads(dash_path.read_text(encoding="utf-8"))
    queries = dashboard_queries(dash)
    problems = []
    for where, expr in queries:
        problems += check_expression(where, expr, series, literals)
    used_dash = set().union(*(set(METRIC.findall(q)) for _, q in queries))
    report.check(f"{show(dash_path, root)}: {len(queries)} queries use {len(used_dash)} real series names", problems)

    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r} < 36")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource with query prometheus")
    if "namespace" not in variables:
        problems.append("no `namespace` variable")
    ids = []

    def walk(panels):
        for panel in panels:
            ids.append(panel.get("id"))
            if panel.get("type") != "row":
                where = f"panel {panel.get('id')} {panel.get('title')!r}"
                if "gridPos" not in panel:
                    problems.append(f"{where}: no gridPos")
                if panel.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"{where}: datasource is not ${{datasource}}")
                targets = panel.get("targets") or []
                if not targets or not all(t.get("expr") for t in targets):
                    problems.append(f"{where}: a panel without a query")
                for t in targets:
                    if t.get("datasource", {}).get("uid") != "${datasource}":
                        problems.append(f"{where} {t.get('refId')}: target datasource is not ${{datasource}}")
            walk(panel.get("panels", []))

    walk(dash.get("panels", []))
    for var in variables.values():
        if var.get("type") == "query" and var.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"variable {var.get('name')}: datasource is not ${{datasource}}")
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids are not unique: {ids}")
    report.check(f"dashboard structure: schemaVersion {dash.get('schemaVersion')}, {len(ids)} panels, variables {sorted(variables)}", problems)

    if args.promtool:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("groups:\n  - name: grafana-dashboard-queries\n    rules:\n")
            for i, (where, expr) in enumerate(queries):
                f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(grafana_to_promql(expr))}\n")
            tmp = f.name
        try:
            run = subprocess.run([args.promtool, "check", "rules", tmp], capture_output=True, text=True)
        finally:
            os.unlink(tmp)
        output = (run.stdout + run.stderr).strip().splitlines()
        report.check(
            f"the dashboard's {len(queries)} queries parse as PromQL (promtool check rules)",
            [] if run.returncode == 0 else output,
        )

    exported = {s for m in source.values() for s in m.series()}
    unused = sorted({m.family for m in source.values()} - {
        f for f, m in source.items() if set(m.series()) & (used_rules | used_dash)
    })
    print(f"info: {len(exported)} series names exported; metrics neither rules nor dashboard use: {', '.join(unused) or 'none'}")
    print(f"metric names: {report.passes} passed, {report.failures} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
