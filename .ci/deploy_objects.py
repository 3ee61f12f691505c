"""Checks of Kubernetes objects, for .ci/validate_deploy.py: the official schemas and the
vendored Prometheus Operator CRD schemas, names, labels and namespaces, the references between
the objects of one installation, the `restricted` Pod Security Standard and RBAC grants (which
deploy_prepull.py uses too).

Every check takes the objects it checks (`Doc`s with their files and lines) and a `Report`;
none reads deploy/ by itself or runs a tool. `Schemas` reads kubernetes-validate's schema files
and the vendored CRD schemas in .ci/schemas/.
"""

import json
import re
from pathlib import Path

import jsonschema
import referencing
from kubernetes_validate import utils as kv

# Files the daemon reads that are not named by a --*-file flag (the desired state's
# Registry.spec.credentials.dockerConfig points here).
SECRET_FILES = ["/var/run/secrets/lifeboat/registry/config.json"]
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "Node",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# The Kubernetes version whose schemas are used: the closest one kubernetes-validate ships.
TARGET_K8S = (1, 33)


# --- schemas --------------------------------------------------------------------------------------
def pick_version(target=TARGET_K8S):
    """The Kubernetes version kubernetes-validate ships schemas for that is closest to `target`."""

    def distance(v):
        major, minor = (int(x) for x in v.split(".")[:2])
        return (abs(major - target[0]) * 100 + abs(minor - target[1]), -minor)

    return min(kv.all_versions(), key=distance)


def strict_crd_schema(schema):
    """A CRD's schema as an API server applies it with strict field validation: an object that
    lists its properties accepts no others, and `nullable: true` admits null. References to
    Kubernetes types point into the official definitions."""
    if isinstance(schema, list):
        return [strict_crd_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: strict_crd_schema(v) for k, v in out["properties"].items()}
        if out["properties"] and "additionalProperties" not in out:
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_crd_schema(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = strict_crd_schema(out[key])
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("io.k8s.") and ref.endswith("#"):
        out["$ref"] = f"/api/_definitions.json#/$defs/{ref[:-1]}"
    return out


# The vendored CRD schemas (.ci/schemas/), by (apiVersion, kind).
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}


class Schemas:
    """The official Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors)
    and the vendored Prometheus Operator CRD schemas, made strict the same way."""

    def __init__(self, crd_dir):
        self.version = pick_version()
        self.dir = f"kubernetes-json-schema/v{self.version}-local-strict"
        definitions = kv.schema_contents(f"{self.dir}/_definitions.json", self.version)
        self.registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
        self.validators = {}
        for (api_version, kind), file in CRD_SCHEMAS.items():
            schema = strict_crd_schema(json.loads((Path(crd_dir) / file).read_text()))
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            schema["$id"] = f"https://kubernetes.io/api/{kind.lower()}-crd.json"
            self.validators[(api_version, kind)] = (
                jsonschema.Draft202012Validator(schema, registry=self.registry),
                "Prometheus Operator CRD schema",
            )

    def validator(self, api_version, kind):
        """(validator, which schema), or None when there is no schema for that kind."""
        key = (api_version, kind)
        if key not in self.validators:
            # The file names kubernetes-validate uses: rbac.authorization.k8s.io/v1 -> rbac-v1.
            group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", str(api_version))
            try:
                schema = kv.schema_contents(f"{self.dir}/{str(kind).lower()}-{group_version}.json", self.version)
            except FileNotFoundError:
                self.validators[key] = None
            else:
                registry = referencing.Resource.from_contents(schema) @ self.registry
                self.validators[key] = (
                    jsonschema.Draft202012Validator(schema, registry=registry),
                    f"Kubernetes {self.version} schema",
                )
        return self.validators[key]


def check_schema(doc, schemas, report):
    """The object against its kind's schema: every error, at its place."""
    api_version, kind = doc.data.get("apiVersion"), doc.data.get("kind")
    found = schemas.validator(api_version, kind)
    if found is None:
        report.error(
            doc.where(),
            f"no Kubernetes {schemas.version} schema for {kind} in {api_version}: a "
            "typo, or a custom resource these checks have no schema for",
        )
        return
    validator, which = found
    for e in sorted(validator.iter_errors(doc.data), key=lambda e: [str(p) for p in e.path]):
        path = tuple(e.path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            # Point at the first unknown field itself rather than at the object holding it.
            unknown = sorted(k for k in e.instance if k not in (e.schema.get("properties") or {}))
            path += tuple(unknown[:1])
        report.error(doc.where(path), f"{e.message} ({which})")


# --- checks the API server would make that the schemas do not ---------------------------------
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def object_key(data):
    """(kind, namespace, name); the namespace is None for cluster-scoped kinds."""
    meta = data.get("metadata") or {}
    namespace = None if data.get("kind") in CLUSTER_SCOPED else meta.get("namespace")
    return data.get("kind"), namespace, meta.get("name")


def check_label_map(doc, path, labels, report):
    """Label keys and values as the API server validates them."""
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (
            (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)))
            or len(name) > 63
            or not LABEL_NAME.match(name)
        ):
            report.error(doc.where(path + (key,)), f"invalid label key {key!r}")
        if not isinstance(value, str) or len(value) > 63 or (value and not LABEL_NAME.match(value)):
            report.error(
                doc.where(path + (key,)),
                f"invalid label value {value!r} (a string of at most 63 letters, digits, '-', '_' or '.')",
            )


def check_metadata(doc, namespace, home, report):
    """The name, the labels, and the namespace: cluster-scoped kinds have none, namespaced ones
    live in the Namespace their own directory defines."""
    meta = doc.data.get("metadata") or {}
    kind, name = doc.data.get("kind"), meta.get("name", "")
    pattern = DNS_LABEL if kind in ("Namespace", "Service") else DNS_SUBDOMAIN
    limit = 63 if kind in ("Namespace", "Service") else 253
    if not isinstance(name, str) or not pattern.match(name) or len(name) > limit:
        report.error(doc.where(("metadata", "name")), f"invalid name {name!r} for a {kind}")
    check_label_map(doc, ("metadata", "labels"), meta.get("labels"), report)
    if kind in CLUSTER_SCOPED:
        if "namespace" in meta:
            report.error(doc.where(("metadata", "namespace")), f"{kind} is cluster-scoped: no namespace")
    elif meta.get("namespace") != namespace:
        report.error(
            doc.where(("metadata", "namespace")),
            f"namespace {meta.get('namespace')!r}, expected {namespace!r} (the Namespace of {home})"
            if namespace
            else f"namespaced, but {home} defines no Namespace to put it in",
        )


def matches(selector, labels):
    """Whether a label selector selects `labels`."""
    labels = labels or {}
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if (
            (op == "In" and value not in expr.get("values", []))
            or (op == "NotIn" and value in expr.get("values", []))
            or (op == "Exists" and expr["key"] not in labels)
            or (op == "DoesNotExist" and expr["key"] in labels)
        ):
            return False
    return True


def check_quantities(doc, path, resources, report):
    for section in ("requests", "limits"):
        for name, value in ((resources or {}).get(section) or {}).items():
            if not QUANTITY.match(str(value)):
                report.error(doc.where(path + (section, name)), f"invalid quantity {value!r}")


def check_objects(docs, layout, schemas, report):
    """Schemas and metadata of every object of the installation; no object twice; one Namespace
    in the base. Returns the objects by (kind, namespace, name)."""
    objects = {}
    namespaces = {}
    for d in docs:
        if isinstance(d.data, dict) and d.data.get("kind") == "Namespace":
            namespaces.setdefault(d.file.parent, []).append((d.data.get("metadata") or {}).get("name"))
    base = layout.path(layout.base).resolve()
    if len(namespaces.get(base, [])) != 1:
        report.error(layout.base, f"expected one Namespace object, found {len(namespaces.get(base, []))}")
    for doc in docs:
        if (
            not isinstance(doc.data, dict)
            or not {"apiVersion", "kind", "metadata"} <= doc.data.keys()
            or not isinstance(doc.data["metadata"], dict)
            or "name" not in doc.data["metadata"]
        ):
            report.error(doc.where(), "not a Kubernetes object (apiVersion, kind and metadata.name are required)")
            continue
        key = object_key(doc.data)
        if key in objects:
            report.error(doc.where(), f"{key[0]}/{key[2]} is defined twice (also {objects[key].where()})")
        objects[key] = doc
        check_schema(doc, schemas, report)
        home = doc.file.parent
        own = namespaces.get(home) or [None]
        if len(own) > 1:
            report.error(doc.where(), f"{report.show(home)} defines several Namespaces; keep one per directory")
        with report.guard(doc.where(), "its metadata"):
            check_metadata(doc, own[0], report.show(home), report)
    return objects


# --- references between the objects -------------------------------------------------------------
def check_pod_template(doc, objects, report):
    """A workload's pod template: selector, ServiceAccount, volumes and mounts, named ports,
    resources, the security settings every pod of deploy/ keeps, and the files behind the
    daemon's --*-file flags coming from read-only Secret mounts. Returns (labels, pod spec)."""
    spec_path = ("spec", "template", "spec")
    pod = doc.data["spec"]["template"]
    spec = pod.get("spec") or {}
    pod_labels = (pod.get("metadata") or {}).get("labels") or {}
    check_label_map(doc, ("spec", "template", "metadata", "labels"), pod_labels, report)
    if not matches(doc.data["spec"].get("selector"), pod_labels):
        report.error(doc.where(("spec", "selector")), "the selector does not match the pod template's labels")
    sa = spec.get("serviceAccountName")
    namespace = doc.data["metadata"].get("namespace")
    if sa and ("ServiceAccount", namespace, sa) not in objects:
        report.error(
            doc.where(spec_path + ("serviceAccountName",)), f"no ServiceAccount {sa!r} in namespace {namespace!r}"
        )
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    used = set()
    sc = spec.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") != 65532:
        report.error(
            doc.where(spec_path + ("securityContext",)), "pods must set runAsNonRoot: true and runAsUser: 65532"
        )
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        report.error(doc.where(spec_path + ("securityContext",)), "pods must use seccompProfile RuntimeDefault")
    init = spec.get("initContainers") or []
    for i, c in enumerate(init + (spec.get("containers") or [])):
        section, index = ("initContainers", i) if i < len(init) else ("containers", i - len(init))
        cpath = spec_path + (section, index)
        if not DNS_LABEL.match(c.get("name", "")):
            report.error(doc.where(cpath + ("name",)), f"invalid container name {c.get('name')!r}")
        ports = {}
        for j, p in enumerate(c.get("ports") or []):
            name = p.get("name")
            if name is not None:
                if len(name) > 15 or not PORT_NAME.match(name) or "--" in name or not re.search("[a-z]", name):
                    report.error(
                        doc.where(cpath + ("ports", j, "name")), f"invalid port name {name!r} (IANA service name)"
                    )
                ports[name] = p.get("containerPort")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                report.error(doc.where(cpath + (probe, "httpGet", "port")), f"no container port named {port!r}")
        mounts = {}
        for j, m in enumerate(c.get("volumeMounts") or []):
            if m["name"] not in volumes:
                report.error(doc.where(cpath + ("volumeMounts", j, "name")), f"no volume named {m['name']!r}")
            if m["mountPath"] in mounts:
                report.error(doc.where(cpath + ("volumeMounts", j, "mountPath")), f"{m['mountPath']} is mounted twice")
            used.add(m["name"])
            mounts[m["mountPath"]] = m
        check_quantities(doc, cpath + ("resources",), c.get("resources"), report)
        for section_name in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in ((c.get("resources") or {}).get(section_name) or {}):
                    report.error(doc.where(cpath + ("resources",)), f"{section_name}.{resource} is not set")
        csc = c.get("securityContext") or {}
        if (
            csc.get("allowPrivilegeEscalation") is not False
            or csc.get("readOnlyRootFilesystem") is not True
            or "ALL" not in ((csc.get("capabilities") or {}).get("drop") or [])
        ):
            report.error(
                doc.where(cpath + ("securityContext",)),
                "containers must set allowPrivilegeEscalation: "
                "false, readOnlyRootFilesystem: true and drop ALL capabilities",
            )
        # Files named by --*-file flags (or under /var/run/secrets), and the credential files
        # the desired state points at, must come from a read-only Secret mount.
        args = c.get("args") or []
        files = [
            (args[j + 1], cpath + ("args", j + 1))
            for j, arg in enumerate(args)
            if arg.startswith("--")
            and j + 1 < len(args)
            and (arg.endswith("-file") or args[j + 1].startswith("/var/run/secrets/"))
        ]
        if section == "containers" and index == 0:
            files += [(f, cpath + ("volumeMounts",)) for f in SECRET_FILES]
        for file, fpath in files:
            mount = max(
                (m for path, m in mounts.items() if file.startswith(path.rstrip("/") + "/")),
                key=lambda m: len(m["mountPath"]),
                default=None,
            )
            if mount is None:
                report.error(doc.where(fpath), f"{file} is not under any volume mount")
                continue
            volume = volumes.get(mount["name"]) or {}
            if "secret" not in volume or not mount.get("readOnly"):
                report.error(doc.where(fpath), f"{file} should come from a read-only Secret mount")
                continue
            relative = file[len(mount["mountPath"].rstrip("/")) + 1 :]
            items = volume["secret"].get("items")
            if items is not None and relative not in {it["path"] for it in items}:
                report.error(doc.where(fpath), f"{file}: the Secret volume's items do not provide {relative!r}")
    for name in volumes:
        if name not in used:
            report.error(doc.where(spec_path + ("volumes",)), f"volume {name!r} is not mounted by any container")
    return pod_labels, spec


def check_references(objects, layout, report):
    """References between the objects: workloads (with the `restricted` Pod Security Standard in
    namespaces that enforce it), Services, PodDisruptionBudgets, ServiceMonitors, role bindings,
    least-privilege roles, and every Namespace naming the standard it enforces."""
    workloads = {}
    for (kind, namespace, name), doc in objects.items():
        if kind in ("Deployment", "DaemonSet", "StatefulSet"):
            with report.guard(doc.where(), "the pod template"):
                workloads[(kind, namespace, name)] = check_pod_template(doc, objects, report)
            if (kind, namespace, name) in workloads and pod_security(objects, namespace) == "restricted":
                template = doc.data["spec"]["template"]
                check_restricted(
                    doc,
                    ("spec", "template", "spec"),
                    template.get("spec") or {},
                    (template.get("metadata") or {}).get("annotations"),
                    report,
                )
    pods = list(workloads.values())

    def container_ports(labels_selected):
        names = set()
        for labels, spec in pods:
            if labels_selected(labels):
                for c in spec.get("containers") or []:
                    names |= {p.get("name") for p in c.get("ports") or []}
        return names

    opt_in = layout.path(layout.nodes_proxy_opt_in).resolve()
    services = {}
    for (kind, namespace, _), doc in objects.items():
        with report.guard(doc.where(), "its references"):
            check_reference(doc, kind, namespace, objects, pods, container_ports, services, opt_in, report)
    for (kind, _, _), doc in objects.items():
        if kind == "ServiceMonitor":
            with report.guard(doc.where(), "what it scrapes"):
                check_service_monitor(doc, services, report)
    with report.guard("deploy/base", "the Lease"):
        check_lease(objects, report)


def check_service_monitor(doc, services, report):
    """A ServiceMonitor selects a Service of the installation, by its labels, and scrapes ports
    that Service names."""
    selected = [
        s for s in services.values() if matches(doc.data["spec"].get("selector"), s.data["metadata"].get("labels"))
    ]
    if not selected:
        report.error(doc.where(("spec", "selector")), "selects no Service of this base (by the Service's labels)")
    port_names = {p.get("name") for s in selected for p in s.data["spec"].get("ports") or []}
    for i, endpoint in enumerate(doc.data["spec"].get("endpoints") or []):
        if "port" in endpoint and endpoint["port"] not in port_names:
            report.error(doc.where(("spec", "endpoints", i, "port")), f"no Service port named {endpoint['port']!r}")


def check_reference(doc, kind, namespace, objects, pods, container_ports, services, opt_in, report):
    """One object's references (see check_references)."""
    name = doc.data["metadata"]["name"]
    if kind == "Namespace" and pod_security(objects, name) not in ("restricted", "baseline", "privileged"):
        report.error(
            doc.where(("metadata", "labels")),
            "set pod-security.kubernetes.io/enforce: say which Pod Security Standard the namespace's pods meet",
        )
    if kind == "Service":
        selector = doc.data["spec"].get("selector") or {}

        def selected(labels):
            return all(labels.get(k) == v for k, v in selector.items())

        if not any(selected(labels) for labels, _ in pods):
            report.error(doc.where(("spec", "selector")), "selects no pod template of this base")
        names = container_ports(selected)
        for i, port in enumerate(doc.data["spec"].get("ports") or []):
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in names:
                report.error(
                    doc.where(("spec", "ports", i, "targetPort")),
                    f"no container port named {port['targetPort']!r} in the selected pods",
                )
        services[name] = doc
    elif kind == "PodDisruptionBudget":
        if not any(matches(doc.data["spec"].get("selector"), labels) for labels, _ in pods):
            report.error(doc.where(("spec", "selector")), "selects no pod template of this base")
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = doc.data["roleRef"]
        if role_of(objects, doc) is None:
            report.error(
                doc.where(("roleRef",)),
                f"no {ref['kind']} {ref['name']!r}" + (f" in namespace {namespace!r}" if ref["kind"] == "Role" else ""),
            )
        for i, subject in enumerate(doc.data.get("subjects") or []):
            if (
                subject["kind"] == "ServiceAccount"
                and ("ServiceAccount", subject.get("namespace"), subject["name"]) not in objects
            ):
                report.error(
                    doc.where(("subjects", i)),
                    f"no ServiceAccount {subject['name']!r} in namespace {subject.get('namespace')!r}",
                )
    elif kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(doc.data.get("rules") or []):
            if "nodes/proxy" in rule.get("resources", []) and doc.file.parent.resolve() != opt_in:
                report.error(
                    doc.where(("rules", i)),
                    f"nodes/proxy is close to node admin: grant it only in the opt-in {report.show(opt_in)}",
                )
            if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []) or "*" in rule.get("apiGroups", []):
                report.error(doc.where(("rules", i)), "wildcards are not least privilege")
            if kind == "ClusterRole" and set(rule.get("verbs", [])) - {"get", "list", "watch"}:
                report.error(doc.where(("rules", i, "verbs")), "the ClusterRole must stay read-only")
            if rule.get("resourceNames") and "create" in rule.get("verbs", []):
                report.error(doc.where(("rules", i)), "resourceNames cannot restrict create")


def check_lease(objects, report):
    """The Lease the daemon uses (--lease) is the one its Role lets it update."""
    deployment = objects.get(("Deployment", "lifeboat", "lifeboat"))
    role = objects.get(("Role", "lifeboat", "lifeboat"))
    if not deployment or not role:
        return
    try:
        args = deployment.data["spec"]["template"]["spec"]["containers"][0].get("args") or []
    except (KeyError, IndexError, TypeError):
        return
    lease = args[args.index("--lease") + 1] if "--lease" in args and args.index("--lease") + 1 < len(args) else None
    names = {
        n
        for r in role.data.get("rules") or []
        if "leases" in r.get("resources", [])
        for n in r.get("resourceNames") or []
    }
    if lease is None:
        report.error(deployment.where(("spec", "template", "spec", "containers", 0, "args")), "no --lease argument")
    elif names and lease not in names:
        report.error(role.where(("rules",)), f"the Lease rules name {sorted(names)}, the daemon uses --lease {lease}")


# --- Pod Security Standards, RBAC --------------------------------------------------------------
def pod_security(objects, namespace):
    """The Pod Security Standard the Namespace enforces (its pod-security.kubernetes.io/enforce label)."""
    ns = objects.get(("Namespace", None, namespace))
    return ((ns.data["metadata"].get("labels") or {}) if ns else {}).get("pod-security.kubernetes.io/enforce")


SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def check_restricted(doc, path, spec, annotations, report):
    """Every control of the `restricted` Pod Security Standard (which includes `baseline`), as Pod
    Security admission applies it to a pod spec (Kubernetes 1.33)."""

    def bad(where, rule):
        report.error(doc.where(path + where), f"not `restricted` (Pod Security Standard): {rule}")

    psc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad((field,), "no host namespaces")
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad(
                ("volumes", i),
                f"volume type {', '.join(sorted(kinds))} is not allowed (no hostPath; only "
                f"{', '.join(sorted(RESTRICTED_VOLUMES))})",
            )
    for i, sysctl in enumerate(psc.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad(("securityContext", "sysctls", i), f"sysctl {sysctl.get('name')} is not a safe one")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad(("securityContext", "windowsOptions"), "no Windows HostProcess")
    if psc.get("runAsUser") == 0:
        bad(("securityContext", "runAsUser"), "runAsUser must not be 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad(("securityContext", "seccompProfile"), f"seccomp profile {pod_seccomp} (RuntimeDefault or Localhost)")
    for key, value in (annotations or {}).items():
        if (
            key.startswith("container.apparmor.security.beta.kubernetes.io/")
            and value != "runtime/default"
            and not value.startswith("localhost/")
        ):
            bad((), f"AppArmor annotation {key}: must not be unconfined")
    for section in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(section) or []):
            where = (section, i, "securityContext")
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                bad(where, "no privileged containers")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad(where, "allowPrivilegeEscalation must be false")
            if sc.get("procMount") not in (None, "Default"):
                bad(where, "procMount must be Default")
            if (sc.get("windowsOptions") or {}).get("hostProcess"):
                bad(where, "no Windows HostProcess")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                bad(where, "capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                bad(where, "capabilities may add only NET_BIND_SERVICE")
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                bad(where, "runAsNonRoot must be true (for the pod, or for every container)")
            if sc.get("runAsUser") == 0:
                bad(where, "runAsUser must not be 0")
            seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
            if seccomp not in ("RuntimeDefault", "Localhost"):
                bad(where, "seccompProfile must be RuntimeDefault or Localhost (for the pod, or every container)")
            if (sc.get("appArmorProfile") or psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
                bad(where, "AppArmor must not be Unconfined")
            selinux = sc.get("seLinuxOptions") or psc.get("seLinuxOptions") or {}
            if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
                bad(where, "no custom SELinux user, role or type")
            for j, port in enumerate(c.get("ports") or []):
                if port.get("hostPort"):
                    bad((section, i, "ports", j), "no host ports")


def role_of(objects, binding):
    ref = binding.data["roleRef"]
    namespace = binding.data["metadata"].get("namespace") if ref["kind"] == "Role" else None
    return objects.get((ref["kind"], namespace, ref["name"]))


def granted(objects, account, namespace, group, resource):
    """The verbs ServiceAccount `account` (namespace, name) has on `resource` in `namespace`,
    through the RoleBindings there and the ClusterRoleBindings."""
    verbs = set()
    for (kind, ns, _), binding in objects.items():
        if not (kind == "ClusterRoleBinding" or (kind == "RoleBinding" and ns == namespace)):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == account
            for s in binding.data.get("subjects") or []
        ):
            continue
        role = role_of(objects, binding)
        for rule in (role.data.get("rules") or []) if role else []:
            if (
                group in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and not rule.get("resourceNames")
            ):
                verbs |= set(rule.get("verbs", []))
    return verbs
