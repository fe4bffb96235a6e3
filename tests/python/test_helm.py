"""The Helm chart (charts/switchyard), proven by Helm's own Go library and a real API server.

Offline (always):
- `helm lint --strict` through Helm's Go SDK (the `helm-python-sdk` wheel, `helm_python`) with the
  default values and with each optional feature on; any error or warning fails.
- Every rendered manifest is schema-checked with `kubernetes-validate` in strict mode against the
  newest Kubernetes version the pinned package knows (unknown fields fail).
- A typo in values fails at render time with a message naming the key (values.schema.json).
- The Deployment's security context, probes, resources, drain timings; the RBAC rules equal
  deploy/rbac/gateway-rbac.yaml; CRDs and the dashboard copy equal their sources.
- Sidecar mode: the rendered routes ConfigMap is served by the real `switchyard` binary with the
  rendered sidecar container's arguments, in front of `switchyard-mock`.

Against envtest (tests/k8s/envtest.sh: kube-apiserver 1.20 + etcd on loopback):
- CRDs, ServiceAccount and RBAC are created for real; every other manifest with
  `kubectl create --dry-run=server`. Kinds the 1.20 server lacks: ServiceMonitor (no
  prometheus-operator CRD) is skipped; autoscaling/v2 HPA and policy/v1 PDB are dry-run as
  autoscaling/v2beta2 and policy/v1beta1, which have the same fields.
- `kubectl auth can-i --as system:serviceaccount:NS:SA` proves the rendered RBAC grants exactly
  the verbs the gateway needs and refuses the rest, cluster-wide and namespace-scoped.
- The real `switchyard serve --kube` runs with a token of that ServiceAccount (nothing else
  bound to it), loads a route, becomes ready and writes status: the grant is sufficient.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

import helm_python as helm
import kubernetes_validate
from kubernetes_validate import utils as kv_utils

from conftest import (  # noqa: E402
    REPO,
    STARTUP_TIMEOUT_S,
    UPSTREAM_KEY,
    Mock,
    Proc,
    binary,
    child_env,
    http,
)
from harness import serving_addresses  # noqa: E402

CHART = REPO / "charts" / "switchyard"
RBAC_FILE = REPO / "deploy" / "rbac" / "gateway-rbac.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "switchyard-dashboard.json"
EXAMPLES = REPO / "deploy" / "examples"
RELEASE = "sy"
NAMESPACE = "switchyard-system"

# The newest Kubernetes the pinned kubernetes-validate has schemas for (1.37 with 1.37.0).
K8S_VERSION = kv_utils.latest_version()

# Each optional feature, switched on alone. `all` switches on everything at once.
FEATURES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "dashboard": {"dashboard": {"enabled": True}},
    "autoscaling": {
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80}
    },
    "pdb": {"podDisruptionBudget": {"enabled": True}},
    "tls": {"tls": {"secretName": "switchyard-tls"}},
    "pdbMaxUnavailable": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
    "networkPolicy": {
        "networkPolicy": {
            "enabled": True,
            "apiFrom": [{"namespaceSelector": {"matchLabels": {"switchyard-client": "true"}}}],
            "adminFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        }
    },
    "redisUrl": {"redis": {"url": "redis://redis:6379/0", "failureMode": "closed"}},
    "redisSecret": {"redis": {"existingSecret": {"name": "redis", "key": "url"}}},
    "adminToken": {"adminToken": {"existingSecret": {"name": "admin", "key": "token"}}},
    "otel": {"otel": {"endpoint": "http://otel-collector:4317", "protocol": "grpc"}},
    "extras": {
        "extraEnv": [{"name": "RUST_LOG", "value": "info"}],
        "extraEnvFrom": [{"configMapRef": {"name": "switchyard-env"}}],
        "extraVolumes": [{"name": "tmp", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "imagePullSecrets": [{"name": "regcred"}],
        "gateway": {"requireAuth": True, "accessLog": False, "extraArgs": ["--reload-debounce=200ms"]},
        "image": {"digest": "sha256:" + "a" * 64},
    },
    "metadata": {
        "commonLabels": {"team": "platform"},
        "commonAnnotations": {"owner": "platform@example.com"},
        "podLabels": {"tier": "edge"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "deploymentLabels": {"d": "1"},
        "deploymentAnnotations": {"d": "1"},
        "service": {"labels": {"s": "1"}, "annotations": {"s": "1"}},
        "serviceAccount": {
            "labels": {"sa": "1"},
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"},
        },
    },
    "scheduling": {
        "podAntiAffinity": "hard",
        "topologySpread": {"enabled": True, "whenUnsatisfiable": "DoNotSchedule"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
    "preStop": {"preStopSleepSeconds": 5, "terminationGracePeriodSeconds": 80},
    "listener": {
        "gateway": {
            "listener": {
                "maxConnections": 2000,
                "maxInFlight": 500,
                "headerReadTimeout": "10s",
                "bodyReadTimeout": "2m",
                "requestReadTimeout": "3m",
                "idleTimeout": "650s",
                "maxHeaderBytes": 32768,
                "http2": {"maxConcurrentStreams": 250, "keepAliveInterval": "0s", "keepAliveTimeout": "5s"},
            }
        }
    },
    "sidecar": {"mode": "sidecar"},
}


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_all: dict[str, Any] = {}
for _name, _vals in FEATURES.items():
    if _name not in ("sidecar", "namespaced", "pdbMaxUnavailable", "redisUrl", "preStop"):
        _all = _deep_merge(_all, _vals)
FEATURES["all"] = _all


# === Helm ===


def render_files(
    values: Optional[dict] = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=release, namespace=namespace, is_install=True)


def render(
    values: Optional[dict] = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> list[dict]:
    """The rendered manifests (templates only; CRDs come from crds/), NOTES.txt left out."""
    docs = []
    for path, text in sorted(render_files(values, namespace, release).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__source", path)
                docs.append(doc)
    return docs


def clean(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__source"}


def find(docs: list[dict], kind: str, name: Optional[str] = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: Optional[str] = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict]) -> dict:
    dep = one(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def parse_seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", d):
        total += float(num) * units[unit]
    return total


# === Offline: lint, render, schema ===


@pytest.mark.parametrize("feature", list(FEATURES))
def test_lint(feature: str):
    report = helm.lint(CHART, FEATURES[feature], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, json.dumps(report, indent=2)


@pytest.mark.parametrize("feature", list(FEATURES))
def test_rendered_manifests_validate_strictly(feature: str):
    docs = render(FEATURES[feature])
    assert docs, "nothing rendered"
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # kubernetes-validate knows only built-in kinds; check the ServiceMonitor by hand.
            assert doc["kind"] == "ServiceMonitor"
            assert set(doc["spec"]) == {"selector", "namespaceSelector", "endpoints"}
            for ep in doc["spec"]["endpoints"]:
                assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}, ep
            continue
        try:
            kubernetes_validate.validate(clean(doc), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{doc['__source']}: {doc['kind']} {doc['metadata']['name']} is invalid for "
                f"Kubernetes {K8S_VERSION}: {'.'.join(map(str, e.path))}: {e.message}",
                pytrace=False,
            )


def test_features_render_what_they_promise():
    assert {d["kind"] for d in render()} == {
        "Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "Role", "RoleBinding",
    }
    sm = one(render(FEATURES["serviceMonitor"]), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "admin"
    assert sm["metadata"]["labels"]["release"] == "prom"

    dep = one(render(FEATURES["tls"]), "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--tls-cert=/etc/switchyard/tls/tls.crt" in c["args"]
    assert "--tls-key=/etc/switchyard/tls/tls.key" in c["args"]
    assert {"name": "tls", "mountPath": "/etc/switchyard/tls", "readOnly": True} in c["volumeMounts"]
    vols = dep["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "switchyard-tls"}} in vols
    assert "--tls-cert" not in " ".join(one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])

    cm = one(render(FEATURES["dashboard"]), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["switchyard-dashboard.json"] == DASHBOARD.read_text().rstrip("\n")

    docs = render(FEATURES["autoscaling"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert "replicas" not in one(docs, "Deployment")["spec"], "the HPA owns replicas"

    assert one(render(FEATURES["pdb"]), "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    pdb = one(render(FEATURES["pdbMaxUnavailable"]), "PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb

    np = one(render(FEATURES["networkPolicy"]), "NetworkPolicy")["spec"]
    assert [r["ports"][0]["port"] for r in np["ingress"]] == ["http", "admin"]

    # The binary requires auth unless told otherwise: the chart always says which, and
    # keeps the admin port reachable for probes and scraping (the binary's default is loopback).
    args = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--require-auth=true" in args and "--admin-listen=0.0.0.0:9090" in args
    dep = one(render({"gateway": {"requireAuth": False}}), "Deployment")
    assert "--require-auth=false" in dep["spec"]["template"]["spec"]["containers"][0]["args"]

    c = container(render(FEATURES["redisUrl"]))
    assert env_of(c)["SWITCHYARD_REDIS_URL"] == "redis://redis:6379/0"
    assert "--redis-failure-mode=closed" in c["args"]
    c = container(render(FEATURES["redisSecret"]))
    assert env_of(c)["SWITCHYARD_REDIS_URL"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    # The admin token comes from a Secret, through the variable `--admin-token` reads; none
    # by default.
    c = container(render(FEATURES["adminToken"]))
    assert env_of(c)["SWITCHYARD_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "admin", "key": "token"}}
    assert "SWITCHYARD_ADMIN_TOKEN" not in env_of(container(render({})))

    env = env_of(container(render(FEATURES["otel"])))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == f"{RELEASE}-switchyard"

    docs = render(FEATURES["extras"])
    c = container(docs)
    assert env_of(c)["RUST_LOG"] == "info"
    assert {"--require-auth=true", "--no-access-log", "--reload-debounce=200ms"} <= set(c["args"])
    assert c["image"].endswith("@sha256:" + "a" * 64)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]

    # Labels and annotations reach every object.
    for d in render(FEATURES["metadata"]):
        assert d["metadata"]["labels"]["team"] == "platform", d["kind"]
        assert d["metadata"]["annotations"]["owner"] == "platform@example.com", d["kind"]
    docs = render(FEATURES["metadata"])
    tmpl = one(docs, "Deployment")["spec"]["template"]["metadata"]
    assert tmpl["labels"]["tier"] == "edge" and tmpl["annotations"]["prometheus.io/scrape"] == "true"

    pod = one(render(FEATURES["scheduling"]), "Deployment")["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"

    c = container(render(FEATURES["preStop"]))
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_deployment_is_hardened_and_drains():
    docs = render()
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(docs)

    assert c["args"][:2] == ["serve", "--kube"]
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]

    # SIGTERM: keep serving (not ready) for --shutdown-delay, then let open streams finish for
    # --drain-timeout; the kubelet must not kill the pod before both are over.
    args = dict(a.split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
    budget = parse_seconds(args["--shutdown-delay"]) + parse_seconds(args["--drain-timeout"])
    assert parse_seconds(args["--shutdown-delay"]) > 0
    assert pod["terminationGracePeriodSeconds"] > budget
    assert "lifecycle" not in c, "no preStop by default: the binary's --shutdown-delay does it"

    env = env_of(c)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert "podAntiAffinity" in pod["affinity"]

    svc = one(docs, "Service")["spec"]
    assert svc["type"] == "ClusterIP"
    assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]} == {
        "http": (80, "http"),
        "admin": (9090, "admin"),
    }
    assert svc["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"gateway": {"drainTimeot": "30s"}}, "additional properties 'drainTimeot' not allowed"),
        ({"serviceMonitor": {"enable": True}}, "additional properties 'enable' not allowed"),
        ({"mode": "daemonset"}, "/mode"),
        ({"gateway": {"drainTimeout": "thirty seconds"}}, "/gateway/drainTimeout"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"redis": {"failureMode": "maybe"}}, "/redis/failureMode"),
        ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
        ({"gateway": {"listener": {"maxConections": 5}}}, "additional properties 'maxConections' not allowed"),
        ({"gateway": {"listener": {"bodyReadTimeout": "0s"}}}, "/gateway/listener/bodyReadTimeout"),
        ({"gateway": {"listener": {"maxInFlight": 0}}}, "/gateway/listener/maxInFlight"),
    ],
)
def test_values_typo_fails_clearly(values: dict, needle: str):
    with pytest.raises(helm.HelmValuesError) as e:
        render(values)
    assert needle in str(e.value), str(e.value)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"]), report


def test_chart_crds_equal_top_level_crds():
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top and top == chart
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), name


def test_dashboard_copy_equals_deploy_grafana():
    assert (CHART / "dashboards" / DASHBOARD.name).read_bytes() == DASHBOARD.read_bytes()


def _rbac_file() -> dict[str, list]:
    """Rules of deploy/rbac/gateway-rbac.yaml by object name."""
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    return {d["metadata"]["name"]: d["rules"] for d in docs}


def _cluster_roles(docs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(watch ClusterRoles, TokenReview ClusterRoles) of a render."""
    roles = find(docs, "ClusterRole")
    review = [r for r in roles if r["metadata"]["name"].endswith("-tokenreview")]
    return [r for r in roles if r not in review], review


def test_rbac_rules_equal_deploy_rbac():
    want = _rbac_file()
    docs = render()
    watch, review = _cluster_roles(docs)
    assert len(watch) == 1 and watch[0]["rules"] == want["switchyard-gateway"]
    assert len(review) == 1 and review[0]["rules"] == want["switchyard-gateway-tokenreview"]
    lease = one(docs, "Role")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert lease["rules"] == want["switchyard-gateway-lease"]
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    bindings = find(docs, "ClusterRoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == {
        watch[0]["metadata"]["name"], review[0]["metadata"]["name"]}
    for crb in bindings:
        assert crb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]

    # Watching some namespaces: the only cluster-wide grant left is TokenReview, and it can
    # be turned off.
    docs = render(FEATURES["namespaced"])
    watch, review = _cluster_roles(docs)
    assert not watch and len(review) == 1
    assert [b["roleRef"]["name"] for b in find(docs, "ClusterRoleBinding")] == [
        review[0]["metadata"]["name"]]
    roles = {d["metadata"]["namespace"]: d for d in find(docs, "Role") if not d["metadata"]["name"].endswith("-lease")}
    assert set(roles) == {"team-a", "team-b"}
    for role in roles.values():
        assert role["rules"] == want["switchyard-gateway"]
    c = container(docs)
    assert [a for a in c["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a", "--namespace=team-b",
    ]
    no_review = render({**FEATURES["namespaced"], "rbac": {"tokenReview": False}})
    assert not find(no_review, "ClusterRole") and not find(no_review, "ClusterRoleBinding")
    assert not find(render({"rbac": {"create": False}}), "ClusterRole")


# === Sidecar mode ===


def _sidecar_container(values: dict) -> tuple[dict, str]:
    """(the container from NOTES.txt, routes.yaml from the ConfigMap)."""
    files = render_files(_deep_merge({"mode": "sidecar"}, values))
    notes = next(v for k, v in files.items() if k.endswith("NOTES.txt"))
    snippet = yaml.safe_load(notes[notes.index("containers:"):])
    (c,) = snippet["containers"]
    assert snippet["volumes"][0]["configMap"]["name"] == f"{RELEASE}-switchyard-routes"
    docs = render(_deep_merge({"mode": "sidecar"}, values))
    assert [d["kind"] for d in docs] == ["ConfigMap"], "sidecar mode renders only the routes"
    return c, docs[0]["data"]["routes.yaml"]


LISTENER_FLAGS = {
    "--max-connections": ("maxConnections",),
    "--max-in-flight": ("maxInFlight",),
    "--header-read-timeout": ("headerReadTimeout",),
    "--body-read-timeout": ("bodyReadTimeout",),
    "--request-read-timeout": ("requestReadTimeout",),
    "--idle-timeout": ("idleTimeout",),
    "--max-header-bytes": ("maxHeaderBytes",),
    "--h2-max-concurrent-streams": ("http2", "maxConcurrentStreams"),
    "--h2-keepalive-interval": ("http2", "keepAliveInterval"),
    "--h2-keepalive-timeout": ("http2", "keepAliveTimeout"),
}


def test_listener_limits_render_as_flags_with_the_binarys_defaults():
    """gateway.listener renders one flag each; its defaults are the binary's own (read from
    `switchyard serve --help`), and set values reach the flags."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["listener"]
    help_text = subprocess.run(
        [binary("switchyard"), "serve", "--help"], capture_output=True, text=True, timeout=30,
        env=child_env(),
    ).stdout
    args = dict(a.split("=", 1) for a in container(render())["args"] if "=" in a)
    custom = dict(a.split("=", 1) for a in container(render(FEATURES["listener"]))["args"] if "=" in a)
    for flag, path in LISTENER_FLAGS.items():
        default = values
        set_value = FEATURES["listener"]["gateway"]["listener"]
        for key in path:
            default, set_value = default[key], set_value[key]
        m = re.search(rf"^\s+{re.escape(flag)} <[A-Z0-9_]+>\n(.*?)\[default: ([^\]]+)\]", help_text, re.M | re.S)
        assert m, f"{flag} not in `switchyard serve --help`"
        assert str(default) == m.group(2), f"{flag}: chart {default!r}, binary {m.group(2)!r}"
        assert args[flag] == str(default), flag
        assert custom[flag] == str(set_value), flag


def test_sidecar_snippet_is_a_valid_hardened_container():
    c, routes = _sidecar_container({})
    assert "--listen=127.0.0.1:8080" in c["args"], "the API stays inside the pod"
    assert "--require-auth=false" in c["args"], "sidecar.requireAuth is off by default"
    c_auth, _ = _sidecar_container({"sidecar": {"requireAuth": True}})
    assert "--require-auth=true" in c_auth["args"]
    assert "--config=/etc/switchyard" in c["args"]
    assert c["volumeMounts"][0]["mountPath"] == "/etc/switchyard"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {
            "containers": [{"name": "app", "image": "app:1"}, c],
            "volumes": [{"name": "switchyard-routes", "configMap": {"name": "x"}}],
        },
    }
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    kinds = [d["kind"] for d in yaml.safe_load_all(routes)]
    assert kinds == ["Secret", "ModelBackend", "AIRoute"]


def test_sidecar_example_matches_the_chart():
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "sidecar" / "app-with-sidecar.yaml").read_text()) if d]
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    cm = one(docs, "ConfigMap")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "switchyard")
    files = render_files({"mode": "sidecar"}, release="app")
    rendered_cm = one(render({"mode": "sidecar"}, release="app"), "ConfigMap")
    notes = next(v for k, v in files.items() if k.endswith("NOTES.txt"))
    snippet = yaml.safe_load(notes[notes.index("containers:"):])
    assert cm["metadata"]["name"] == rendered_cm["metadata"]["name"]
    assert list(yaml.safe_load_all(cm["data"]["routes.yaml"])) == list(
        yaml.safe_load_all(rendered_cm["data"]["routes.yaml"])
    )
    assert sidecar == snippet["containers"][0]
    assert pod["volumes"] == snippet["volumes"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    assert {"name": "OPENAI_BASE_URL", "value": "http://localhost:8080/v1"} in app["env"]


def test_examples_are_valid_local_manifests():
    res = subprocess.run([binary("switchyard"), "validate", "--config", EXAMPLES],
                         capture_output=True, text=True, timeout=30, env=child_env())
    assert res.returncode == 0, res.stderr + res.stdout
    kinds = sorted(d["kind"] for p in EXAMPLES.glob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d)
    assert kinds == ["AIBudget", "AIConsumer", "AIRoute", "AIRoute", *["ModelBackend"] * 4, *["Secret"] * 5]


def test_sidecar_serves_the_rendered_routes(mock: Mock, tmp_path: Path):
    """The real binary, started with the rendered container's args and the rendered ConfigMap,
    answers the app on localhost:<port>/v1 (here an ephemeral port)."""
    manifests = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "upstream"},
         "stringData": {"apiKey": "${UPSTREAM_API_KEY}"}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "ModelBackend", "metadata": {"name": "mock"},
         "spec": {"provider": "openai-compatible", "endpoint": f"http://{mock.addr}/v1",
                  "auth": {"secretRef": {"name": "upstream", "key": "apiKey"}},
                  "models": [{"name": "mock-model"}]}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute", "metadata": {"name": "chat"},
         "spec": {"match": {"models": ["gpt-4o-mini"]},
                  "backends": [{"backendRef": {"name": "mock"}, "model": "mock-model"}]}},
    ]
    c, routes = _sidecar_container({
        "sidecar": {"manifests": manifests, "env": [{"name": "UPSTREAM_API_KEY", "value": "set-below"}]},
        "gateway": {"shutdownDelay": "0s", "drainTimeout": "1s"},
    })
    mount = c["volumeMounts"][0]["mountPath"]
    config = tmp_path / "routes"
    config.mkdir()
    (config / "routes.yaml").write_text(routes)

    check = subprocess.run(
        [binary("switchyard"), "validate", "--config", config],
        capture_output=True, text=True, timeout=30,
        env=child_env(UPSTREAM_API_KEY=UPSTREAM_KEY),
    )
    assert check.returncode == 0, check.stderr

    args = []
    for a in c["args"]:
        a = a.replace(mount, str(config))
        if a.startswith("--listen="):
            a = "--listen=127.0.0.1:0"
        if a.startswith("--admin-listen="):
            a = "--admin-listen=127.0.0.1:0"
        args.append(a)
    proc = Proc("switchyard-sidecar", [binary("switchyard"), *args], tmp_path / "sidecar.log",
                child_env(UPSTREAM_API_KEY=UPSTREAM_KEY, RUST_LOG="info"))
    try:
        listen, admin = proc.wait_for(serving_addresses, "'switchyard serving'", STARTUP_TIMEOUT_S)
        assert listen.startswith("127.0.0.1:")
        _wait_ready(f"http://{admin}", proc)
        import openai

        client = openai.OpenAI(base_url=f"http://{listen}/v1", api_key="app", max_retries=0, timeout=10)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi from the app"}]
        )
        assert reply.choices[0].message.content
        client.close()
    finally:
        proc.stop()


def _wait_ready(admin_url: str, proc: Proc, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http("GET", f"{admin_url}/readyz", timeout=1.0)
        except OSError as e:
            status, body = None, str(e)
        if status == 200:
            return
        if proc.popen.poll() is not None or time.monotonic() >= deadline:
            pytest.fail(f"not ready (last /readyz: {status} {body!r}):\n{proc.output()}", pytrace=False)
        time.sleep(0.1)


# === Against the envtest API server ===

ENVTEST_HINT = (
    "the Kubernetes API server of the cluster-mode tests is not running: "
    "run `tests/k8s/envtest.sh start` (CI starts it; `make envtest` does too)"
)


class Kube:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.kubectl = env["KUBECTL"]
        self.kubeconfig = env["KUBECONFIG_ADMIN"]

    def run(self, *args: str, stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "--request-timeout=20s", *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )
        if check and res.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{res.stderr}{res.stdout}", pytrace=False)
        return res

    def create(self, doc: dict, dry_run: bool = False) -> subprocess.CompletedProcess:
        args = ["create", "-f", "-", "-o", "name"]
        if dry_run:
            args.append("--dry-run=server")
        return self.run(*args, stdin=json.dumps(clean(doc)))

    def can_i(self, sa: str, verb: str, resource: str, namespace: Optional[str], subresource: str = "") -> bool:
        args = ["auth", "can-i", verb, resource, "--as", sa]
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        if subresource:
            args.append(f"--subresource={subresource}")
        res = self.run(*args, check=False)
        out = res.stdout.strip()
        assert out in ("yes", "no"), f"kubectl auth can-i {args}: {res.stderr}{out}"
        return out == "yes"


@pytest.fixture(scope="module")
def kube() -> Kube:
    env_dir = Path(os.environ.get("ENVTEST_DIR", "/tmp/switchyard-envtest"))
    env_file = env_dir / "env"
    if not env_file.is_file():
        pytest.fail(f"{env_file} not found: {ENVTEST_HINT}", pytrace=False)
    env = {}
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    status = subprocess.run(
        [str(REPO / "tests" / "k8s" / "envtest.sh"), "status"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "ENVTEST_DIR": str(env_dir)},
    )
    if status.returncode != 0:
        pytest.fail(f"{ENVTEST_HINT}\n{status.stdout}{status.stderr}", pytrace=False)
    k = Kube(env)
    k.run("get", "--raw", "/readyz")
    # The chart's CRDs, for real (they may already exist: other suites install the same files).
    # --validate=false: kubectl 1.20 does not know `x-kubernetes-validations` (CEL, 1.25+); the
    # 1.20 server accepts and drops it (tests/k8s/README.md).
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        res = k.run("create", "--validate=false", "-f", str(crd), check=False)
        assert res.returncode == 0 or "AlreadyExists" in res.stderr, res.stderr
        k.run("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crd))
    return k


# Served as the same fields under an older version by the 1.20 server.
OLDER_VERSION = {
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "autoscaling/v2beta2",
    ("policy/v1", "PodDisruptionBudget"): "policy/v1beta1",
}
# Kinds the 1.20 server has no API for at all: skipped in the dry run.
SKIPPED_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
REAL_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def _new_namespace(kube: Kube, prefix: str) -> str:
    # envtest has no namespace controller: always use fresh namespaces.
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return ns


def _install(kube: Kube, values: dict, namespace: str, release: str) -> tuple[list[dict], list[str]]:
    """Creates RBAC + ServiceAccount for real, dry-runs the rest; returns (docs, skipped)."""
    docs = render(values, namespace=namespace, release=release)
    served = set(kube.run("api-versions").stdout.split())
    skipped = []
    # Namespaces referenced by per-namespace Roles must exist.
    for ns in values.get("watch", {}).get("namespaces", []):
        if kube.run("get", "ns", ns, check=False).returncode != 0:
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for doc in sorted(docs, key=lambda d: d["kind"] not in REAL_KINDS):
        key = (doc["apiVersion"], doc["kind"])
        if doc["apiVersion"] not in served:
            if key in OLDER_VERSION:
                doc = {**doc, "apiVersion": OLDER_VERSION[key]}
            else:
                assert key in SKIPPED_KINDS, f"the API server lacks {key}, which is not expected"
                skipped.append(doc["kind"])
                continue
        real = doc["kind"] in REAL_KINDS
        res = kube.create(doc, dry_run=not real)
        assert res.stdout.strip(), f"{doc['kind']}: {res.stderr}"
    return docs, skipped


@pytest.fixture(scope="module")
def installed(kube: Kube):
    """The chart with every feature on, in a fresh namespace, watching all namespaces."""
    ns = _new_namespace(kube, "sy-helm")
    release = f"r{uuid.uuid4().hex[:6]}"
    docs, skipped = _install(kube, FEATURES["all"], ns, release)
    yield kube, ns, release, docs, skipped
    for d in docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kube.run("delete", d["kind"], d["metadata"]["name"], "--wait=false", check=False)


def test_install_into_apiserver(installed):
    kube, ns, release, docs, skipped = installed
    assert skipped == ["ServiceMonitor"], skipped
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "ClusterRole", "ClusterRoleBinding", "Role"} <= kinds
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    kube.run("get", "serviceaccount", sa, "-n", ns)
    for role in find(docs, "ClusterRole"):
        kube.run("get", "clusterrole", role["metadata"]["name"])


def test_examples_dry_run(kube: Kube):
    """deploy/examples/ (and the sidecar example) are accepted by the API server as-is."""
    ns = _new_namespace(kube, "sy-examples")
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        res = kube.run("create", "--dry-run=server", "-n", ns, "-f", str(path), "-o", "name")
        assert res.stdout.strip(), f"{path}: {res.stderr}"


def test_sidecar_configmap_dry_run(kube: Kube):
    ns = _new_namespace(kube, "sy-sidecar")
    docs, skipped = _install(kube, {"mode": "sidecar"}, ns, "app")
    assert [d["kind"] for d in docs] == ["ConfigMap"] and not skipped


# What the gateway needs (deploy/rbac/gateway-rbac.yaml): (verb, resource, subresource).
NEEDED_ANYWHERE = [
    *[(v, r, "") for r in ("airoutes.switchyard.dev", "modelbackends.switchyard.dev",
                           "aiconsumers.switchyard.dev", "aibudgets.switchyard.dev")
      for v in ("get", "list", "watch")],
    *[("patch", r, "status") for r in ("airoutes.switchyard.dev", "modelbackends.switchyard.dev",
                                       "aiconsumers.switchyard.dev", "aibudgets.switchyard.dev")],
    ("get", "secrets", ""), ("list", "secrets", ""), ("watch", "secrets", ""),
    ("create", "events.events.k8s.io", ""), ("patch", "events.events.k8s.io", ""),
]
# Cluster-scoped by nature: granted cluster-wide in both modes.
NEEDED_CLUSTER = [("create", "tokenreviews.authentication.k8s.io", "")]
NEEDED_IN_RELEASE_NS = [("create", "leases.coordination.k8s.io", ""),
                        ("get", "leases.coordination.k8s.io", ""),
                        ("update", "leases.coordination.k8s.io", "")]
REFUSED = [
    ("create", "airoutes.switchyard.dev", ""), ("update", "airoutes.switchyard.dev", ""),
    ("patch", "airoutes.switchyard.dev", ""), ("delete", "airoutes.switchyard.dev", ""),
    ("delete", "modelbackends.switchyard.dev", ""), ("update", "aiconsumers.switchyard.dev", "status"),
    ("create", "aibudgets.switchyard.dev", ""), ("delete", "aibudgets.switchyard.dev", ""),
    ("create", "secrets", ""), ("update", "secrets", ""), ("delete", "secrets", ""),
    ("list", "pods", ""), ("get", "configmaps", ""), ("create", "events", ""),
    ("delete", "events.events.k8s.io", ""), ("list", "namespaces", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""), ("*", "*", ""),
]


def test_rbac_cluster_wide_is_sufficient_and_no_wider(installed):
    kube, ns, release, docs, _ = installed
    sa = f"system:serviceaccount:{ns}:{one(docs, 'ServiceAccount')['metadata']['name']}"
    other = _new_namespace(kube, "sy-other")
    wrong = []
    for where in (ns, other, None):
        for verb, res, sub in NEEDED_ANYWHERE:
            if not kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"refused but needed: {verb} {res}/{sub} in {where or 'all namespaces'}")
        for verb, res, sub in REFUSED:
            if kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"granted but not needed: {verb} {res}/{sub} in {where or 'all namespaces'}")
    for verb, res, sub in NEEDED_CLUSTER:
        if not kube.can_i(sa, verb, res, None, sub):
            wrong.append(f"refused but needed: {verb} {res}")
    for verb, res, sub in NEEDED_IN_RELEASE_NS:
        if not kube.can_i(sa, verb, res, ns, sub):
            wrong.append(f"refused but needed: {verb} {res} in {ns}")
        for where in (other, None):
            if kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"granted outside the release namespace: {verb} {res} in {where or 'all'}")
    for verb in ("delete", "list", "watch", "patch"):
        if kube.can_i(sa, verb, "leases.coordination.k8s.io", ns):
            wrong.append(f"granted but not needed: {verb} leases")
    assert not wrong, "\n".join(wrong)


def test_rbac_namespaced_grants_only_the_watched_namespaces(kube: Kube):
    ns = _new_namespace(kube, "sy-helm-ns")
    a, b, c = (f"{ns}-{x}" for x in "abc")
    release = f"r{uuid.uuid4().hex[:6]}"
    values = {"watch": {"namespaces": [a, b]}}
    docs, _ = _install(kube, values, ns, release)
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": c}})
    assert _cluster_roles(docs)[0] == []
    sa = f"system:serviceaccount:{ns}:{one(docs, 'ServiceAccount')['metadata']['name']}"
    wrong = []
    for where in (a, b):
        for verb, res, sub in NEEDED_ANYWHERE:
            if not kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"refused but needed: {verb} {res}/{sub} in {where}")
        for verb, res, sub in REFUSED:
            if kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"granted but not needed: {verb} {res}/{sub} in {where}")
    for where in (c, ns, None):
        for verb, res, sub in NEEDED_ANYWHERE:
            if kube.can_i(sa, verb, res, where, sub):
                wrong.append(f"granted outside the watched namespaces: {verb} {res}/{sub} in {where or 'all'}")
    for verb, res, sub in NEEDED_IN_RELEASE_NS + NEEDED_CLUSTER:
        if not kube.can_i(sa, verb, res, ns, sub):
            wrong.append(f"refused but needed: {verb} {res} in {ns}")
    assert not wrong, "\n".join(wrong)


def _sa_kubeconfig(kube: Kube, ns: str, sa: str, path: Path) -> None:
    """A kubeconfig holding a TokenRequest token of ServiceAccount ns/sa (kubectl 1.20 has no
    `create token`)."""
    req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
           "spec": {"expirationSeconds": 3600}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(req, f)
    try:
        out = kube.run("create", "--raw", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", "-f", f.name)
    finally:
        os.unlink(f.name)
    token = json.loads(out.stdout)["status"]["token"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {
            "server": kube.env["KUBE_APISERVER_URL"],
            "certificate-authority": kube.env["KUBE_CA_FILE"]}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "envtest", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    }))


CONSUMER_KEY = "sk-helm-consumer-7d1e"


def test_gateway_runs_with_only_the_chart_rbac(installed, mock: Mock, tmp_path: Path):
    """The real gateway, as the chart's ServiceAccount: loads a route from the cluster, becomes
    ready, and the status writer (Lease holder) marks the route Accepted."""
    kube, ns, release, docs, _ = installed
    dep_c = container(docs)
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    kubeconfig = tmp_path / "sa.kubeconfig"
    _sa_kubeconfig(kube, ns, sa, kubeconfig)

    app = _new_namespace(kube, "sy-app")
    selector = FEATURES["all"].get("watch", {}).get("secretSelector", "switchyard.dev/secret=true")
    label_k, label_v = selector.split("=")
    for doc in (
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "upstream", "namespace": app,
                                                            "labels": {label_k: label_v}},
         "stringData": {"apiKey": UPSTREAM_KEY}},
        # `all` turns on --require-auth: the caller needs a consumer key (another Secret read).
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team", "namespace": app,
                                                            "labels": {label_k: label_v}},
         "stringData": {"key": CONSUMER_KEY}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIConsumer",
         "metadata": {"name": "team", "namespace": app},
         "spec": {"keySecretRef": {"name": "team", "key": "key"}}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "ModelBackend",
         "metadata": {"name": "mock", "namespace": app},
         "spec": {"provider": "openai-compatible", "endpoint": f"http://{mock.addr}/v1",
                  "auth": {"secretRef": {"name": "upstream", "key": "apiKey"}},
                  "models": [{"name": "mock-model"}]}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
         "metadata": {"name": "chat", "namespace": app},
         "spec": {"match": {"models": [f"helm-{app}"]},
                  "backends": [{"backendRef": {"name": "mock"}, "model": "mock-model"}]}},
    ):
        kube.create(doc)

    # The Deployment's own args, with loopback ports and the kubeconfig instead of the pod's
    # mounted token; POD_NAMESPACE/POD_NAME as the downward API would set them.
    args = []
    for a in dep_c["args"]:
        if a.startswith("--listen="):
            a = "--listen=127.0.0.1:0"
        elif a.startswith("--admin-listen="):
            a = "--admin-listen=127.0.0.1:0"
        elif a.startswith(("--shutdown-delay=", "--drain-timeout=")):
            a = a.split("=")[0] + "=0s"
        elif a.startswith(("--redis", "--tls-")):
            # No Redis here, and the TLS files live in a Secret volume of the pod (the TLS
            # listener itself is tested end to end in tests/tests/e2e.rs).
            continue
        args.append(a)
    args += ["--kubeconfig", str(kubeconfig)]
    proc = Proc("switchyard-kube", [binary("switchyard"), *args], tmp_path / "gateway.log",
                child_env(POD_NAMESPACE=ns, POD_NAME=f"{release}-0", RUST_LOG="info"))
    try:
        listen, admin = proc.wait_for(serving_addresses, "'switchyard serving'", 30)
        deadline = time.monotonic() + 30
        while True:
            status, body = http("GET", f"http://{admin}/debug/routes")
            route = status == 200 and f"helm-{app}" in body
            got = kube.run("get", "airoute", "chat", "-n", app, "-o", "json").stdout
            conds = json.loads(got).get("status", {}).get("conditions", [])
            accepted = any(c["type"] == "Accepted" and c["status"] == "True" for c in conds)
            if route and accepted:
                break
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway with the chart's RBAC did not load/accept the route "
                            f"(route loaded: {route}, conditions: {conds}):\n{proc.output()}",
                            pytrace=False)
            time.sleep(0.2)
        forbidden = [line for line in proc.output().splitlines() if "forbidden" in line.lower()]
        assert not forbidden, "\n".join(forbidden)
        import openai

        client = openai.OpenAI(base_url=f"http://{listen}/v1", api_key=CONSUMER_KEY, max_retries=0, timeout=10)
        reply = client.chat.completions.create(model=f"helm-{app}", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        client.close()
    finally:
        proc.stop()
