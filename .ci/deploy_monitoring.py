"""Checks of the monitoring files, for .ci/validate_deploy.py: the Prometheus alert rules and
their unit tests (with promtool), the PrometheusRule that ships the same rules for the operator,
and the Grafana dashboards (layout, variables, and the PromQL of every query, with promtool).

Tools are run on copies in the work folder; nothing under deploy/ is written.
"""

import copy
import difflib
import json
import re
import subprocess
import tempfile
from pathlib import Path

import yaml
from deploy_yaml import load_yaml


# --- Prometheus rules -------------------------------------------------------------------------
def check_rules(rules, rule_tests, tools, report):
    """deploy/prometheus/rules.yaml: each rule an alert or a recording rule; alerts with a
    summary, description, runbook and severity, named once and unit-tested; then `promtool check
    rules` and `promtool test rules` (on a copy without annotations: the unit tests compare
    labels only). Returns the groups."""
    rules = Path(rules)
    docs = load_yaml(rules, report)
    if len(docs) != 1 or not isinstance(docs[0].data, dict) or not isinstance(docs[0].data.get("groups"), list):
        report.error(report.show(rules), "expected one document with `groups:`")
        return []
    plain = docs[0].data["groups"]
    alerts = []
    for g, group in enumerate(plain):
        with report.guard(docs[0].where(("groups", g)), "the group"):
            for r, rule in enumerate(group.get("rules") or []):
                with report.guard(docs[0].where(("groups", g, "rules", r)), "the rule"):
                    check_rule(rule, docs[0].where(("groups", g, "rules", r)), alerts, report)
    for name in sorted({a for a in alerts if alerts.count(a) > 1}):
        report.error(report.show(rules), f"alert name {name} is used twice")
    if not tools.promtool:
        return plain
    run_promtool([tools.promtool, "check", "rules", str(rules)], report.show(rules), report)
    tested = set()
    for path in rule_tests:
        for test in load_yaml(path, report):
            with report.guard(test.where(), "the rule tests"):
                if test.data.get("rule_files") != [rules.name]:
                    report.error(test.where(("rule_files",)), f"rule_files must be [{rules.name}]")
                tested |= {
                    case.get("alertname")
                    for group in test.data.get("tests") or []
                    for case in group.get("alert_rule_test") or []
                }
    for name in alerts:
        if name not in tested:
            report.error(report.show(rules.parent / "*.test.yaml"), f"no test for alert {name}")
    with tempfile.TemporaryDirectory(dir=tools.work) as tmp:
        stripped = copy.deepcopy(docs[0].data)
        for group in stripped["groups"]:
            for rule in (group.get("rules") or []) if isinstance(group, dict) else []:
                if isinstance(rule, dict):
                    rule.pop("annotations", None)
        (Path(tmp) / rules.name).write_text(yaml.safe_dump(stripped, sort_keys=False))
        for path in rule_tests:
            (Path(tmp) / path.name).write_text(path.read_text())
            run_promtool([tools.promtool, "test", "rules", path.name], report.show(path), report, cwd=tmp)
    return plain


def check_rule(rule, where, alerts, report):
    """One rule: an alert or a recording rule; an alert (added to `alerts`) has a summary,
    description, runbook and severity."""
    if not isinstance(rule, dict):
        report.error(where, "a rule is a mapping (alert or record, expr, for, labels, annotations)")
        return
    if ("alert" in rule) == ("record" in rule):
        report.error(where, "a rule has exactly one of alert and record")
    if "alert" in rule:
        alerts.append(rule["alert"])
        for annotation in ("summary", "description", "runbook"):
            if not (rule.get("annotations") or {}).get(annotation):
                report.error(where, f"alert {rule['alert']} has no {annotation} annotation")
        if (rule.get("labels") or {}).get("severity") not in ("info", "warning", "critical"):
            report.error(where, f"alert {rule['alert']} needs a severity label (info, warning, critical)")


def check_prometheus_rule_matches(groups, rules, operator_rule, operator_file, report):
    """The PrometheusRule (the operator's form of the rules) holds exactly the groups of rules.yaml."""
    if operator_rule is None:
        report.error(report.show(operator_file), "no PrometheusRule lifeboat in the built base")
        return
    theirs = (operator_rule.data.get("spec") or {}).get("groups")
    if theirs != groups:
        a = json.dumps(groups, indent=1, sort_keys=True).splitlines()
        b = json.dumps(theirs, indent=1, sort_keys=True).splitlines()
        diff = "\n".join(
            list(difflib.unified_diff(a, b, report.show(rules), operator_rule.shown, lineterm="", n=2))[:40]
        )
        report.error(
            operator_rule.where(("spec", "groups")),
            f"spec.groups differs from the groups of {report.show(rules)}:\n{diff}",
        )


def run_promtool(command, where, report, cwd=None):
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        report.error(where, f"{' '.join(map(str, command[1:3]))} failed:\n{(result.stdout + result.stderr).strip()}")
    return result.returncode == 0


# --- Grafana dashboards -----------------------------------------------------------------------
GRAFANA_BUILTINS = {
    "__interval": "1m",
    "__interval_ms": "60000",
    "__rate_interval": "5m",
    "__range": "1d",
    "__range_s": "86400",
    "__range_ms": "86400000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def all_panels(panels):
    """Every panel, those inside rows included."""
    for panel in panels:
        yield panel
        if isinstance(panel, dict):
            yield from all_panels(panel.get("panels") or [])


def check_dashboard(path, tools, report):
    """A Grafana dashboard: JSON, the fields an import needs, a Prometheus data source variable
    used by every panel, panels inside the 24-column grid and not overlapping, every query
    non-empty with defined variables and, with promtool, valid PromQL. Returns the number of
    queries."""
    where = report.show(path)
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        report.error(f"{where}:{e.lineno}:{e.colno}", f"not valid JSON: {e.msg}")
        return 0
    if not isinstance(d, dict):
        report.error(where, "expected a JSON object (a dashboard)")
        return 0
    for field in ("title", "uid", "panels", "templating", "schemaVersion"):
        if field not in d:
            report.error(where, f"no {field}")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        report.error(where, "schemaVersion must be a number, 36 or later")
    if d.get("id") is not None:
        report.error(where, "id must be null (Grafana assigns it on import)")
    variables = {}
    with report.guard(f"{where}: templating", "the variables"):
        variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
    ds_vars = [n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars:
        report.error(where, "no Prometheus data source variable in templating")
    values = {**GRAFANA_BUILTINS, **{n: ".*" for n in variables}}
    ids, queries, cells = set(), [], {}
    for panel in all_panels(d.get("panels") or []):
        label = f"panel {panel.get('id')}" if isinstance(panel, dict) else f"panel {panel!r}"
        with report.guard(f"{where}: {label}", "the panel"):
            check_panel(panel, where, ds_vars, values, ids, cells, queries, report)
    if tools.promtool and queries:
        # PromQL syntax of every query: promtool parses each as a recording rule.
        rules = {"groups": [{"name": "dashboard", "rules": [{"record": r, "expr": e} for r, _, _, e in queries]}]}
        with tempfile.TemporaryDirectory(dir=tools.work) as tmp:
            file = Path(tmp) / "dashboard-queries.yaml"
            file.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
            result = subprocess.run(
                [tools.promtool, "check", "rules", str(file)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                output = result.stdout + result.stderr
                blamed = [
                    f"{w} query {ref}"
                    for r, w, ref, _ in queries
                    if f'"{r}"' in output or f" {r}:" in output or f'{r}"' in output
                ]
                report.error(
                    where,
                    "PromQL that does not parse"
                    + (f" ({'; '.join(blamed)})" if blamed else "")
                    + ":\n"
                    + output.strip(),
                )
    return len(queries)


def check_panel(panel, where, ds_vars, values, ids, cells, queries, report):
    """One panel of a dashboard (see check_dashboard); its queries are added to `queries`."""
    title = panel.get("title", "?")
    pwhere = f"{where}: panel {panel.get('id')} {title!r}"
    if panel.get("id") in ids:
        report.error(pwhere, "duplicate panel id")
    ids.add(panel.get("id"))
    grid = panel.get("gridPos") or {}
    if not {"x", "y", "w", "h"} <= grid.keys() or grid["x"] < 0 or grid["x"] + grid["w"] > 24:
        report.error(pwhere, f"gridPos {grid} is outside the 24-column grid")
    else:
        overlap = next(
            (
                cells[(x, y)]
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
                if (x, y) in cells
            ),
            None,
        )
        if overlap is not None:
            report.error(pwhere, f"overlaps panel {overlap!r}")
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                cells.setdefault((x, y), title)
    if panel.get("type") == "row":
        return
    if ds_vars and (panel.get("datasource") or {}).get("uid") != f"${{{ds_vars[0]}}}":
        report.error(pwhere, f"datasource must be the ${{{ds_vars[0]}}} variable")
    targets = panel.get("targets") or []
    if not targets:
        report.error(pwhere, "no queries")
    for t in targets:
        expr = t.get("expr", "")
        if not expr.strip():
            report.error(pwhere, f"query {t.get('refId')} is empty")
            continue
        for m in VARIABLE.finditer(expr):
            name = m.group(1) or m.group(2) or m.group(3)
            if name not in values:
                report.error(pwhere, f"query {t.get('refId')} uses ${name}, which the dashboard does not define")
        concrete = VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2) or m.group(3), "x"), expr)
        queries.append((f"panel_{panel.get('id')}_{t.get('refId')}", pwhere, t.get("refId"), concrete))
