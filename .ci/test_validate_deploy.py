"""Unit tests of .ci/validate_deploy.py: each check is given a small broken input (most often a
copy of the small installation in .ci/testdata/ with one thing broken) and must report it with
the file and the line. They do not read deploy/: the checks themselves do that.

Run by .ci/validate-deploy before the checks themselves, with KUBECTL, HADOLINT and PROMTOOL
set; tests that need a tool it does not name are skipped.
"""

import json
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import deploy_monitoring
import deploy_objects
import deploy_prepull
import deploy_yaml
import jsonschema
import validate_deploy as vd

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / ".ci/testdata"
KUBECTL = os.environ.get("KUBECTL", "")
HADOLINT = os.environ.get("HADOLINT", "")
PROMTOOL = os.environ.get("PROMTOOL", "")
_schemas = None


def schemas():
    """One Schemas for all tests: loading the definitions takes a moment."""
    global _schemas
    if _schemas is None:
        _schemas = deploy_objects.Schemas(REPO / ".ci/schemas")
    return _schemas


class AnySchema:
    """Schemas that accept every object, for tests of the other checks (validating every object
    of deploy/ against the real schemas takes half a second)."""

    version = "any"

    def validator(self, api_version, kind):
        return jsonschema.Draft202012Validator({}), "no schema"


ANY_SCHEMA = AnySchema()


class Tree:
    """A copy of .ci/testdata/ (with the CRD schemas the checks use), to break one thing in; or
    an empty folder."""

    def __init__(self, case, empty=False):
        tmp = tempfile.TemporaryDirectory()
        case.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        if not empty:
            shutil.copytree(FIXTURE, self.root, dirs_exist_ok=True)
            shutil.copytree(REPO / ".ci/schemas", self.root / ".ci/schemas")
        (self.root / "work").mkdir()
        self.layout = vd.Layout(self.root)
        self.report = deploy_yaml.Report(self.root)
        self.tools = vd.Tools(kubectl=KUBECTL, hadolint=HADOLINT, promtool=PROMTOOL, work=self.root / "work")

    def path(self, relative):
        return self.root / relative

    def edit(self, relative, old, new):
        """Replaces the one occurrence of `old` in a file; returns the line it starts on."""
        text = self.path(relative).read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {relative}"
        self.path(relative).write_text(text.replace(old, new))
        return text[: text.index(old)].count("\n") + 1

    def write(self, relative, text):
        self.path(relative).parent.mkdir(parents=True, exist_ok=True)
        self.path(relative).write_text(text)

    def manifests(self):
        """The documents of every manifest of deploy/'s kustomizations, read from their files."""
        docs = []
        for directory in self.layout.kustomizations():
            docs += vd.check_kustomization_lists_every_manifest(self.path(directory), self.report)
        return docs

    def objects(self, schemas=ANY_SCHEMA):
        return deploy_objects.check_objects(self.manifests(), self.layout, schemas, self.report)


class Case(unittest.TestCase):
    def assertReported(self, report, *parts):
        """Some problem contains every one of `parts`."""
        for problem in report.problems:
            if all(p in problem for p in parts):
                return
        self.fail(f"no problem with {parts}; found:\n" + "\n".join(report.problems))

    def assertClean(self, report):
        self.assertEqual(report.problems, [], "\n".join(report.problems))


class YamlTest(Case):
    def test_a_duplicate_key_is_reported_with_both_lines(self):
        tree = Tree(self, empty=True)
        tree.write("a.yaml", "kind: A\nspec:\n  replicas: 1\n  replicas: 2\n")
        deploy_yaml.load_yaml(tree.path("a.yaml"), tree.report)
        self.assertReported(tree.report, "a.yaml:4: duplicate key 'replicas' (first at line 3)")

    def test_yaml_that_does_not_parse_is_reported_with_the_file(self):
        tree = Tree(self, empty=True)
        tree.write("a.yaml", "kind: A\nspec: [\n")
        self.assertEqual(deploy_yaml.load_yaml(tree.path("a.yaml"), tree.report), [])
        self.assertReported(tree.report, "a.yaml: not valid YAML")


class KustomizationTest(Case):
    def test_the_fixture_passes(self):
        tree = Tree(self)
        deploy_objects.check_references(tree.objects(schemas()), tree.layout, tree.report)
        vd.check_overlay_covers_deploy(tree.layout, tree.report)
        self.assertClean(tree.report)

    def test_a_manifest_the_kustomization_does_not_list_is_reported(self):
        tree = Tree(self)
        tree.write("deploy/base/configmap.yaml", "apiVersion: v1\nkind: ConfigMap\n")
        tree.manifests()
        self.assertReported(tree.report, "deploy/base/configmap.yaml: not listed in kustomization.yaml")

    def test_the_overlay_must_include_every_kustomization_of_deploy(self):
        tree = Tree(self)
        tree.write("deploy/extra/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n")
        tree.edit(".ci/overlay/kustomization.yaml", "  - ../../deploy/kubelet-configz\n", "")
        vd.check_overlay_covers_deploy(tree.layout, tree.report)
        self.assertReported(tree.report, ".ci/overlay/kustomization.yaml:", "does not include deploy/extra")
        self.assertReported(tree.report, ".ci/overlay/kustomization.yaml:", "does not include deploy/kubelet-configz")

    @unittest.skipUnless(KUBECTL, "KUBECTL is not set")
    def test_a_kustomization_that_does_not_build_is_reported_with_kustomizes_reason(self):
        tree = Tree(self)
        tree.edit("deploy/base/kustomization.yaml", "  - service.yaml\n", "  - services.yaml\n")
        self.assertIsNone(vd.kustomize(KUBECTL, tree.path("deploy/base"), tree.report))
        self.assertReported(
            tree.report, "deploy/base/kustomization.yaml: kubectl kustomize deploy/base failed", "services.yaml"
        )

    @unittest.skipUnless(KUBECTL, "KUBECTL is not set")
    def test_a_component_that_is_not_one_is_reported(self):
        tree = Tree(self)
        tree.edit("deploy/node-agent/kustomization.yaml", "v1alpha1\nkind: Component", "v1beta1\nkind: Kustomization")
        self.assertIsNone(vd.kustomize(KUBECTL, tree.path(".ci/overlay"), tree.report))
        self.assertReported(
            tree.report, ".ci/overlay/kustomization.yaml: kubectl kustomize", "expected kind 'Component'"
        )

    @unittest.skipUnless(KUBECTL, "KUBECTL is not set")
    def test_built_objects_lead_back_to_their_files_and_lines(self):
        tree = Tree(self)
        line = tree.edit("deploy/node-agent/serviceaccount.yaml", "metadata:\n", "metadata:\n  bogus: 1\n") + 1
        built = vd.kustomize(KUBECTL, tree.path(".ci/overlay"), tree.report)
        docs = vd.built_docs(built, tree.path(".ci/overlay"), tree.report, {})
        self.assertTrue(all(vd.ORIGIN not in (d.data["metadata"].get("annotations") or {}) for d in docs))
        deploy_objects.check_objects(docs, tree.layout, schemas(), tree.report)
        self.assertReported(
            tree.report,
            f"deploy/node-agent/serviceaccount.yaml:{line}: ServiceAccount/",
            "metadata.bogus",
            "'bogus' was unexpected",
        )


class SchemaTest(Case):
    def test_an_unknown_field_is_reported_at_its_line(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/deployment.yaml", "  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n") + 1
        tree.objects(schemas())
        self.assertReported(
            tree.report,
            f"deploy/base/deployment.yaml:{line}: Deployment/lifeboat spec.replicaz",
            "'replicaz' was unexpected",
            "Kubernetes",
        )

    def test_a_wrong_type_is_reported(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/deployment.yaml", "  replicas: 2\n", "  replicas: two\n")
        tree.objects(schemas())
        self.assertReported(tree.report, f"deploy/base/deployment.yaml:{line}:", "spec.replicas", "'two' is not")

    def test_a_kind_without_a_schema_is_reported(self):
        tree = Tree(self)
        tree.edit("deploy/base/service.yaml", "kind: Service", "kind: Servise")
        tree.objects(schemas())
        self.assertReported(tree.report, "deploy/base/service.yaml:", "no Kubernetes", "schema for Servise in v1")

    def test_a_service_monitor_against_the_operators_schema(self):
        tree = Tree(self)
        field = tree.edit("deploy/base/servicemonitor.yaml", "scrapeTimeout: 10s", "scrapeTimout: 10s")
        duration = tree.edit("deploy/base/servicemonitor.yaml", "interval: 30s", "interval: 30 s")
        tree.objects(schemas())
        self.assertReported(
            tree.report,
            f"deploy/base/servicemonitor.yaml:{field}: ServiceMonitor/lifeboat spec.endpoints[0].scrapeTimout",
            "Prometheus Operator CRD schema",
        )
        self.assertReported(
            tree.report,
            f"deploy/base/servicemonitor.yaml:{duration}:",
            "spec.endpoints[0].interval: '30 s' does not match",
        )

    def test_a_prometheus_rule_against_the_operators_schema(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/prometheusrule.yaml", "    - name: lifeboat\n", "    - nam: lifeboat\n")
        tree.objects(schemas())
        self.assertReported(
            tree.report,
            f"deploy/base/prometheusrule.yaml:{line}: PrometheusRule/lifeboat spec.groups[0].nam",
            "'nam' was unexpected",
        )
        self.assertReported(tree.report, "'name' is a required property")

    def test_crd_schemas_are_closed_where_they_list_properties(self):
        strict = deploy_objects.strict_crd_schema(
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "nullable": True},
                    "labels": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"b": {"type": "integer"}}}},
                    "metadata": {"$ref": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#"},
                },
            }
        )
        self.assertIs(strict["additionalProperties"], False)
        self.assertEqual(strict["properties"]["a"]["type"], ["string", "null"])
        self.assertEqual(strict["properties"]["labels"]["additionalProperties"], {"type": "string"})
        self.assertIs(strict["properties"]["items"]["items"]["additionalProperties"], False)
        self.assertEqual(
            strict["properties"]["metadata"]["$ref"],
            "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        )


class MetadataTest(Case):
    def test_an_invalid_label_value_is_reported(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/base/service.yaml",
            "    app.kubernetes.io/part-of: lifeboat\n",
            "    app.kubernetes.io/part-of: life boat\n",
        )
        tree.objects()
        self.assertReported(
            tree.report,
            f"deploy/base/service.yaml:{line}: Service/lifeboat metadata.labels.app.kubernetes.io/part-of",
            "invalid label value 'life boat'",
        )

    def test_an_object_outside_its_directorys_namespace_is_reported(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/service.yaml", "  namespace: lifeboat\n", "  namespace: default\n")
        tree.objects()
        self.assertReported(
            tree.report, f"deploy/base/service.yaml:{line}: Service/lifeboat metadata.namespace", "expected 'lifeboat'"
        )

    def test_an_object_defined_twice_is_reported(self):
        tree = Tree(self)
        tree.write(
            "deploy/base/serviceaccount.yaml",
            tree.path("deploy/base/serviceaccount.yaml").read_text()
            + "---\n"
            + tree.path("deploy/base/serviceaccount.yaml").read_text(),
        )
        tree.objects()
        self.assertReported(tree.report, "deploy/base/serviceaccount.yaml:", "ServiceAccount/lifeboat is defined twice")


class ReferencesTest(Case):
    def check(self, tree):
        deploy_objects.check_references(tree.objects(), tree.layout, tree.report)

    def test_a_service_port_naming_no_container_port_is_reported(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/service.yaml", "targetPort: http", "targetPort: metrics")
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/service.yaml:{line}: Service/lifeboat spec.ports[0].targetPort",
            "no container port named 'metrics'",
        )

    def test_a_selector_that_matches_no_pod_is_reported(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/base/poddisruptionbudget.yaml",
            "    matchLabels:\n      app.kubernetes.io/name: lifeboat\n",
            "    matchLabels:\n      app.kubernetes.io/name: lifeboats\n",
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/poddisruptionbudget.yaml:{line}: PodDisruptionBudget/lifeboat spec.selector",
            "selects no pod template",
        )

    def test_a_secret_file_outside_a_secret_mount_is_reported(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/base/deployment.yaml", "/var/run/secrets/lifeboat/trigger/token", "/etc/lifeboat/trigger-token"
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/deployment.yaml:{line}: Deployment/lifeboat spec.template.spec.containers[0].args",
            "/etc/lifeboat/trigger-token is not under any volume mount",
        )

    def test_a_restricted_control_broken_is_reported(self):
        tree = Tree(self)
        tree.edit(
            "deploy/base/deployment.yaml",
            "          emptyDir:\n            sizeLimit: 2Gi\n",
            "          hostPath:\n            path: /var/lib/lifeboat\n",
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            "deploy/base/deployment.yaml:",
            "spec.template.spec.volumes[0]",
            "not `restricted`",
            "volume type hostPath",
        )

    def test_nodes_proxy_outside_the_opt_in_component_is_reported(self):
        tree = Tree(self)
        line = tree.edit("deploy/base/rbac.yaml", 'resources: ["nodes"]', 'resources: ["nodes", "nodes/proxy"]')
        self.check(tree)
        # Reported at the rule, which begins on the line before its resources.
        self.assertReported(
            tree.report,
            f"deploy/base/rbac.yaml:{line - 1}: ClusterRole/lifeboat rules[0]",
            "grant it only in the opt-in deploy/kubelet-configz",
        )

    def test_a_wildcard_verb_is_reported(self):
        tree = Tree(self)
        tree.edit("deploy/base/rbac.yaml", 'verbs: ["get", "update"]', 'verbs: ["*"]')
        self.check(tree)
        self.assertReported(
            tree.report, "deploy/base/rbac.yaml:", "Role/lifeboat rules[1]", "wildcards are not least privilege"
        )

    def test_a_lease_the_role_does_not_name_is_reported(self):
        tree = Tree(self)
        tree.edit("deploy/base/rbac.yaml", 'resourceNames: ["lifeboat"]', 'resourceNames: ["lifeboat-leader"]')
        self.check(tree)
        self.assertReported(
            tree.report,
            "deploy/base/rbac.yaml:",
            "Role/lifeboat rules",
            "the Lease rules name ['lifeboat-leader'], the daemon uses --lease lifeboat",
        )

    def test_an_invalid_quantity_is_reported(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/base/deployment.yaml", "              memory: 128Mi\n", "              memory: 128 MiB\n"
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/deployment.yaml:{line}: Deployment/lifeboat "
            "spec.template.spec.containers[0].resources.requests.memory",
            "invalid quantity '128 MiB'",
        )

    def test_a_binding_to_a_role_that_does_not_exist_is_reported(self):
        tree = Tree(self)
        line = (
            tree.edit("deploy/base/rbac.yaml", "  kind: Role\n  name: lifeboat\n", "  kind: Role\n  name: lifeboot\n")
            - 1
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/rbac.yaml:{line}: RoleBinding/lifeboat roleRef",
            "no Role 'lifeboot' in namespace 'lifeboat'",
        )

    def test_a_service_monitor_that_selects_no_service_is_reported(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/base/servicemonitor.yaml",
            "    matchLabels:\n      app.kubernetes.io/name: lifeboat\n",
            "    matchLabels:\n      app.kubernetes.io/name: lifebot\n",
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            f"deploy/base/servicemonitor.yaml:{line}: ServiceMonitor/lifeboat spec.selector",
            "selects no Service",
        )

    def test_a_namespace_without_a_pod_security_standard_is_reported(self):
        tree = Tree(self)
        tree.edit("deploy/node-agent/namespace.yaml", "    pod-security.kubernetes.io/enforce: privileged\n", "")
        self.check(tree)
        self.assertReported(
            tree.report,
            "deploy/node-agent/namespace.yaml:",
            "Namespace/lifeboat-node-agent",
            "set pod-security.kubernetes.io/enforce",
        )


class PrePullExampleTest(Case):
    def check(self, tree):
        return deploy_prepull.check_prepull_example(
            tree.path("docs/prepull-example"), tree.objects(), ANY_SCHEMA, tree.report
        )

    def test_the_fixtures_example_passes(self):
        tree = Tree(self)
        self.assertEqual(
            deploy_prepull.check_prepull_example(
                tree.path("docs/prepull-example"), tree.objects(schemas()), schemas(), tree.report
            ),
            3,
        )
        self.assertClean(tree.report)

    def test_an_image_not_pinned_by_digest_is_reported(self):
        tree = Tree(self)
        text = tree.path("docs/prepull-example/critical.yaml").read_text()
        first = text.index("        image: ")
        end = text.index("\n", first)
        tree.write(
            "docs/prepull-example/critical.yaml",
            text[:first] + "        image: registry.internal.example:5000/lifeboat/lifeboat:latest" + text[end:],
        )
        line = text[:first].count("\n") + 1
        self.check(tree)
        self.assertReported(
            tree.report,
            f"docs/prepull-example/critical.yaml:{line}: DaemonSet/lifeboat-prepull-critical",
            "images are pinned by digest",
        )

    def test_a_namespace_the_daemon_may_not_manage_is_reported(self):
        tree = Tree(self)
        # The daemon's grant on DaemonSets in the node agents' namespace, without `patch`.
        tree.edit(
            "deploy/node-agent/rbac.yaml",
            'resources: ["daemonsets"]\n    verbs: ["get", "list", "watch", "create", "patch", ',
            'resources: ["daemonsets"]\n    verbs: ["get", "list", "watch", "create", ',
        )
        self.check(tree)
        self.assertReported(
            tree.report,
            "docs/prepull-example/gpu-nodes.yaml:",
            "DaemonSet/",
            "the daemon (ServiceAccount lifeboat in lifeboat) may not patch daemonsets in "
            "namespace 'lifeboat-node-agent'",
        )

    def test_the_node_agents_hostpath_must_be_a_socket_or_a_file(self):
        tree = Tree(self)
        tree.edit("docs/prepull-example/gpu-nodes.yaml", "type: Socket", "type: Directory")
        self.check(tree)
        self.assertReported(
            tree.report, "docs/prepull-example/gpu-nodes.yaml:", "DaemonSet/", "only a socket or a single file"
        )


class RulesTest(Case):
    def test_an_alert_without_a_runbook_is_reported(self):
        tree = Tree(self)
        text = tree.path("deploy/prometheus/rules.yaml").read_text()
        line = text[: text.index("      - alert: LifeboatSyncFailing")].count("\n") + 1
        tree.write("deploy/prometheus/rules.yaml", text.replace(" runbook: >-", " runbok: >-", 1))
        tools = vd.Tools(kubectl="", hadolint="", work=tree.root / "work")
        deploy_monitoring.check_rules(tree.path("deploy/prometheus/rules.yaml"), [], tools, tree.report)
        self.assertReported(
            tree.report,
            f"deploy/prometheus/rules.yaml:{line}:",
            "groups[0].rules[0]",
            "alert LifeboatSyncFailing has no runbook annotation",
        )

    def test_a_prometheus_rule_that_differs_from_the_rules_is_reported(self):
        tree = Tree(self)
        tree.edit(
            "deploy/base/prometheusrule.yaml",
            "      rules:\n        - alert: LifeboatSyncFailing",
            "      rules:\n        - alert: LifeboatSyncFailed",
        )
        objects = tree.objects()
        tools = vd.Tools(kubectl="", hadolint="", work=tree.root / "work")
        groups = deploy_monitoring.check_rules(tree.path("deploy/prometheus/rules.yaml"), [], tools, tree.report)
        deploy_monitoring.check_prometheus_rule_matches(
            groups,
            tree.path("deploy/prometheus/rules.yaml"),
            objects.get(("PrometheusRule", "lifeboat", "lifeboat")),
            tree.path("deploy/base/prometheusrule.yaml"),
            tree.report,
        )
        self.assertReported(
            tree.report,
            "deploy/base/prometheusrule.yaml:",
            "spec.groups differs from the groups of deploy/prometheus/rules.yaml",
            "+++ deploy/base/prometheusrule.yaml",
        )

    @unittest.skipUnless(PROMTOOL, "PROMTOOL is not set")
    def test_promql_that_does_not_parse_and_a_failing_rule_test_are_reported(self):
        tree = Tree(self)
        tree.edit(
            "deploy/prometheus/rules.yaml",
            'lifeboat_sync_runs_total{result="failure"}[1h]',
            'lifeboat_sync_runs_total{result="failure"}[1h',
        )
        deploy_monitoring.check_rules(
            tree.path("deploy/prometheus/rules.yaml"), tree.layout.glob(tree.layout.rule_tests), tree.tools, tree.report
        )
        self.assertReported(tree.report, "deploy/prometheus/rules.yaml: check rules failed", "LifeboatSyncFailing")
        self.assertReported(tree.report, "deploy/prometheus/rules.test.yaml: test rules failed")


class DashboardTest(Case):
    def dashboard(self, tree):
        return tree.path("deploy/grafana/lifeboat-dashboard.json")

    def test_json_that_does_not_parse_is_reported_with_line_and_column(self):
        tree = Tree(self)
        tree.write("deploy/grafana/lifeboat-dashboard.json", '{\n  "title": "x",\n  "uid": y\n}\n')
        deploy_monitoring.check_dashboard(self.dashboard(tree), tree.tools, tree.report)
        self.assertReported(tree.report, "deploy/grafana/lifeboat-dashboard.json:3:10: not valid JSON")

    def test_overlapping_panels_and_unknown_variables_are_reported(self):
        tree = Tree(self)
        d = json.loads(self.dashboard(tree).read_text())
        panels = [p for p in deploy_monitoring.all_panels(d["panels"]) if p.get("type") != "row"]
        panels[1]["gridPos"] = dict(panels[0]["gridPos"])
        panels[0]["targets"][0]["expr"] += " + on() vector($nosuch)"
        self.dashboard(tree).write_text(json.dumps(d, indent=2))
        deploy_monitoring.check_dashboard(
            self.dashboard(tree), vd.Tools(kubectl="", hadolint="", work=tree.root / "work"), tree.report
        )
        self.assertReported(
            tree.report,
            f"deploy/grafana/lifeboat-dashboard.json: panel {panels[1]['id']}",
            f"overlaps panel {panels[0]['title']!r}",
        )
        self.assertReported(
            tree.report, f"panel {panels[0]['id']}", "uses $nosuch, which the dashboard does not define"
        )

    @unittest.skipUnless(PROMTOOL, "PROMTOOL is not set")
    def test_a_query_that_does_not_parse_is_reported_with_its_panel(self):
        tree = Tree(self)
        d = json.loads(self.dashboard(tree).read_text())
        panel = next(p for p in deploy_monitoring.all_panels(d["panels"]) if p.get("targets"))
        panel["targets"][0]["expr"] = "sum(" + panel["targets"][0]["expr"]
        self.dashboard(tree).write_text(json.dumps(d, indent=2))
        deploy_monitoring.check_dashboard(self.dashboard(tree), tree.tools, tree.report)
        self.assertReported(
            tree.report,
            "deploy/grafana/lifeboat-dashboard.json: PromQL that does not parse",
            f"panel {panel['id']} {panel['title']!r} query {panel['targets'][0]['refId']}",
        )


class DockerfileTest(Case):
    def test_a_copy_from_outside_the_build_context_is_reported(self):
        tree = Tree(self)
        line = tree.edit("deploy/Dockerfile", "COPY src ./src\n", "COPY src ./src\nCOPY README.md ./\n") + 1
        vd.check_docker_context(
            tree.path("deploy/Dockerfile"),
            tree.path("deploy/Dockerfile.dockerignore"),
            tree.root / "src",
            tree.root,
            tree.report,
        )
        self.assertReported(
            tree.report,
            f"deploy/Dockerfile:{line}: copies README.md, which "
            "deploy/Dockerfile.dockerignore leaves out of the context",
        )

    def test_a_file_the_binary_embeds_but_the_build_does_not_copy_is_reported(self):
        tree = Tree(self)
        tree.write(
            "src/lib.rs", '//! x\nconst RULES: &str = include_str!("../deploy/grafana/lifeboat-dashboard.json");\n'
        )
        vd.check_docker_context(
            tree.path("deploy/Dockerfile"),
            tree.path("deploy/Dockerfile.dockerignore"),
            tree.root / "src",
            tree.root,
            tree.report,
        )
        self.assertReported(
            tree.report,
            "src/lib.rs:2: embeds deploy/grafana/lifeboat-dashboard.json, which deploy/Dockerfile does not copy",
        )

    @unittest.skipUnless(HADOLINT, "HADOLINT is not set")
    def test_hadolint_findings_are_reported(self):
        tree = Tree(self, empty=True)
        tree.write("Dockerfile", "FROM debian\nRUN apt-get install -y curl\n")
        vd.check_dockerfile(tree.path("Dockerfile"), tree.tools, tree.report)
        self.assertReported(tree.report, "Dockerfile: hadolint found problems", "DL3006")


class WrongShapeTest(Case):
    """Data of a shape nobody meant is reported, never crashed on: the other checks go on."""

    def test_objects(self):
        tree = Tree(self)
        tree.edit("deploy/base/service.yaml", "  labels:\n    app.kubernetes.io/name: lifeboat\n", "  labels: [a]\n")
        tree.edit("deploy/base/service.yaml", "    app.kubernetes.io/part-of: lifeboat\n", "")
        tree.edit(
            "deploy/base/deployment.yaml", "      containers:\n", "      containers: lifeboat\n      xcontainers:\n"
        )
        tree.edit(
            "deploy/base/rbac.yaml", 'rules:\n  - apiGroups: [""]\n', 'rules: nodes\nxrules:\n  - apiGroups: [""]\n'
        )
        tree.edit(
            "deploy/base/servicemonitor.yaml",
            "  endpoints:\n    - port: http\n      path: /metrics\n      interval: 30s\n      scrapeTimeout: 10s\n",
            "  endpoints:\n    port: http\n",
        )
        tree.edit(
            "docs/prepull-example/critical.yaml",
            "  labels:\n    app.kubernetes.io/component",
            "  labels: []\n  x:\n    app.kubernetes.io/component",
        )
        objects = tree.objects(schemas())
        deploy_objects.check_references(objects, tree.layout, tree.report)
        deploy_prepull.check_prepull_example(tree.path("docs/prepull-example"), objects, schemas(), tree.report)
        for file in ("service.yaml", "deployment.yaml", "rbac.yaml", "servicemonitor.yaml", "critical.yaml"):
            self.assertReported(tree.report, f"{file}:")
        self.assertReported(tree.report, "deploy/base/service.yaml:", "cannot check its metadata")

    def test_rules_and_dashboards(self):
        tree = Tree(self)
        line = tree.edit(
            "deploy/prometheus/rules.yaml",
            "      - alert: LifeboatSyncFailing\n",
            "      - just a string\n      - alert: LifeboatSyncFailing\n",
        )
        d = json.loads(tree.path("deploy/grafana/lifeboat-dashboard.json").read_text())
        d["templating"]["list"].append("datasource")
        d["panels"].append("a panel")
        tree.path("deploy/grafana/lifeboat-dashboard.json").write_text(json.dumps(d))
        tools = vd.Tools(kubectl="", hadolint="", work=tree.root / "work")
        deploy_monitoring.check_rules(tree.path("deploy/prometheus/rules.yaml"), [], tools, tree.report)
        deploy_monitoring.check_dashboard(tree.path("deploy/grafana/lifeboat-dashboard.json"), tools, tree.report)
        self.assertReported(tree.report, f"deploy/prometheus/rules.yaml:{line}: groups[0].rules[0]", "a mapping")
        self.assertReported(tree.report, "lifeboat-dashboard.json: templating: cannot check the variables")
        self.assertReported(tree.report, "lifeboat-dashboard.json: panel 'a panel': cannot check the panel")


@unittest.skipUnless(KUBECTL and HADOLINT, "KUBECTL and HADOLINT are not set")
class EverythingTest(Case):
    def test_a_whole_run_on_the_fixture_finds_nothing(self):
        tree = Tree(self)
        summary = vd.run(tree.layout, tree.tools, tree.report, schemas())
        self.assertClean(tree.report)
        self.assertIn("19 manifests built by kustomize", summary)
        self.assertIn("3 rendered pre-pull objects", summary)

    def test_each_broken_file_is_reported_by_a_whole_run(self):
        tree = Tree(self)
        manifest = tree.edit(
            "deploy/base/deployment.yaml", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  paused: maybe\n"
        )
        tree.write("deploy/base/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
        rule = tree.edit(
            "deploy/prometheus/rules.yaml",
            "      - alert: LifeboatSyncFailing\n",
            "      - alert: LifeboatSyncFailing\n        record: also\n",
        )
        d = json.loads(tree.path("deploy/grafana/lifeboat-dashboard.json").read_text())
        panel = next(p for p in deploy_monitoring.all_panels(d["panels"]) if p.get("targets"))
        panel["targets"][0]["expr"] = ""
        tree.path("deploy/grafana/lifeboat-dashboard.json").write_text(json.dumps(d, indent=2))
        vd.run(tree.layout, tree.tools, tree.report, schemas())
        self.assertReported(tree.report, f"deploy/base/deployment.yaml:{manifest + 1}: Deployment/lifeboat spec.paused")
        self.assertReported(tree.report, "deploy/base/extra.yaml: not listed in kustomization.yaml")
        self.assertReported(tree.report, f"deploy/prometheus/rules.yaml:{rule}:", "exactly one of alert and record")
        self.assertReported(tree.report, "deploy/base/prometheusrule.yaml:", "spec.groups differs")
        self.assertReported(tree.report, "deploy/grafana/lifeboat-dashboard.json: panel", "is empty")


if __name__ == "__main__":
    unittest.main()
