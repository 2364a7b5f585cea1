"""The chart, rendered by the real Helm engine for each values file of the matrix, and every
object checked against the real schemas (Kubernetes, KEDA, Prometheus operator, TaskType)."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from typing import Any

import helm_python as helm
import jsonschema
import pytest
from kubernetes_validate import utils as kv

from tests.chart.render import (
    CHART,
    KUBE_VERSIONS,
    RELEASE,
    Rendered,
    env_of,
    pod_specs,
    render,
    render_values,
    validate_custom,
    validate_object,
    values_files,
)

MATRIX = ["default", *values_files()]
CUSTOM_KINDS = {
    "ScaledObject",
    "ScaledJob",
    "TriggerAuthentication",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
}


def _unique(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for obj in objects:
        seen.setdefault(json.dumps(obj, sort_keys=True), obj)
    return list(seen.values())


# -- Helm itself -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_lint_is_clean(name: str) -> None:
    from tests.chart.render import load_values

    report = helm.lint(CHART, load_values(name), strict=True, namespace="tasks", kube_version="v1.25.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_chart_metadata() -> None:
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["kubeVersion"] and meta["appVersion"]
    floor = re.match(r">=\s*(\d+\.\d+\.\d+)", meta["kubeVersion"])
    assert floor and floor.group(1) == min(KUBE_VERSIONS)  # validated against the oldest supported


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"api": {"replicas": 2}}, "replicas"),  # typo of replicaCount
        ({"worker": {"keda": {"maxReplicas": 5}}}, "maxReplicas"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"imagee": {"tag": "x"}}, "imagee"),
        ({"worker": {"concurrency": "8"}}, "concurrency"),  # wrong type
        ({"worker": {"mode": "job"}}, "mode"),  # not an allowed value
        ({"auth": {"enabled": "false"}}, "enabled"),  # a string is not an explicit false
        ({"aws": {"roleArn": "my-role"}}, "roleArn"),
        ({"metrics": {"prometheusRule": {"failureRatio": 5}}}, "failureRatio"),
        ({"image": {"digest": "latest"}}, "digest"),
    ],
)
def test_values_schema_rejects_typos_and_wrong_types(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError, match=field):
            chart.validate_schema(chart.merge_values(values))
        with pytest.raises(helm.HelmError):
            chart.render(values, name=RELEASE, namespace="tasks")


def test_values_schema_accepts_every_matrix_file() -> None:
    from tests.chart.render import load_values

    with helm.Chart.load(CHART) as chart:
        for name in MATRIX:
            chart.validate_schema(chart.merge_values(load_values(name)))


# -- every object against the real schemas -----------------------------------------------


def test_every_object_validates_against_its_schema(rendered: Rendered) -> None:
    owners = Counter(validate_object(obj) for obj in _unique(rendered.objects))
    assert owners["kubernetes"] > 0


def test_the_matrix_covers_every_custom_kind() -> None:
    kinds = set().union(*(render(name).kinds() for name in MATRIX))
    assert kinds >= CUSTOM_KINDS | {"Ingress", "NetworkPolicy", "Job", "PodDisruptionBudget"}


def _typo(obj: dict[str, Any], path: list[Any], wrong: str) -> dict[str, Any]:
    """The object with the last key of `path` renamed to `wrong`."""
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[wrong] = node.pop(path[-1])
    return obj


@pytest.mark.parametrize(
    ("values", "kind", "path", "wrong"),
    [
        (
            "default",
            "Deployment",
            ["spec", "template", "spec", "containers", 0, "readinessProbe"],
            "readinesProbe",
        ),
        ("default", "Service", ["spec", "ports", 0, "targetPort"], "target_port"),
        ("default", "ScaledObject", ["spec", "cooldownPeriod"], "coolDownPeriod"),
        ("default", "ScaledObject", ["spec", "triggers", 0, "authenticationRef"], "authRef"),
        ("default", "TriggerAuthentication", ["spec", "podIdentity", "identityOwner"], "identityowner"),
        (
            "scaledjob",
            "ScaledJob",
            ["spec", "jobTargetRef", "template", "spec", "restartPolicy"],
            "restartpolicy",
        ),
        ("monitoring", "ServiceMonitor", ["spec", "endpoints", 0, "scrapeTimeout"], "scrapeTimout"),
        ("podmonitor", "PodMonitor", ["spec", "podMetricsEndpoints", 0, "port"], "portName"),
        ("monitoring", "PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "fore"),
    ],
)
def test_a_wrong_field_name_fails_validation(values: str, kind: str, path: list[Any], wrong: str) -> None:
    original = render(values).find(kind)[0]
    validate_object(original)
    with pytest.raises((jsonschema.ValidationError, kv.ValidationError)):
        validate_object(_typo(original, path, wrong))


def test_custom_resources_are_not_checked_by_kind_alone() -> None:
    scaled = copy.deepcopy(render("default").one("ScaledObject"))
    scaled["spec"]["minReplicaCount"] = "zero"
    with pytest.raises(jsonschema.ValidationError, match="minReplicaCount"):
        validate_custom(scaled)


# -- pods: security defaults -------------------------------------------------------------


def test_every_pod_has_the_security_defaults(rendered: Rendered) -> None:
    specs = pod_specs(rendered)
    assert specs
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # The operator; the API only to write TaskSchedule status (schedules.statusUpdates).
        talks_to_kubernetes = name.endswith("-operator") or (
            name.endswith("-api") and rendered.values.get("schedules", {}).get("statusUpdates", True)
        )
        assert spec["automountServiceAccountToken"] is talks_to_kubernetes, name
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["runAsUser"] >= 10000, name
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), (name, part)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") == "tmp", name


def test_only_the_operator_account_mounts_a_token(rendered: Rendered) -> None:
    for account in rendered.find("ServiceAccount"):
        if account["metadata"]["name"].endswith("-operator"):
            continue
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_every_selector_selects_a_pod(rendered: Rendered) -> None:
    pods = [(spec_name, obj) for spec_name, obj in _pod_labels(rendered)]
    selectors: list[tuple[str, dict[str, str]]] = []
    for obj in rendered.objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        name = f"{kind}/{obj['metadata']['name']}"
        if kind == "Service":
            selectors.append((name, spec["selector"]))
        elif kind in ("PodDisruptionBudget", "ServiceMonitor", "PodMonitor", "Deployment"):
            selectors.append((name, spec["selector"]["matchLabels"]))
        elif kind == "NetworkPolicy" and "matchLabels" in spec["podSelector"]:
            selectors.append((name, spec["podSelector"]["matchLabels"]))
    for name, selector in selectors:
        assert any(selector.items() <= labels.items() for _, labels in pods), f"{name} selects no pod"


def _pod_labels(rendered: Rendered) -> list[tuple[str, dict[str, str]]]:
    out = []
    for obj in rendered.objects:
        if obj["kind"] == "Pod":
            out.append((obj["metadata"]["name"], obj["metadata"]["labels"]))
        elif obj["kind"] in ("Deployment", "Job"):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["metadata"]["labels"]))
        elif obj["kind"] == "ScaledJob":
            out.append(
                (obj["metadata"]["name"], obj["spec"]["jobTargetRef"]["template"]["metadata"]["labels"])
            )
    return out


def test_network_policies_cover_every_pod() -> None:
    rendered = render("hardened")
    policies = rendered.find("NetworkPolicy")
    assert policies
    for name, labels in _pod_labels(rendered):
        covered = False
        for policy in policies:
            selector = policy["spec"]["podSelector"]
            if "matchLabels" in selector:
                covered |= selector["matchLabels"].items() <= labels.items()
            else:
                covered |= all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"])
        assert covered, f"no NetworkPolicy for {name}"


def test_long_release_names_give_valid_object_names() -> None:
    long = render_values({}, name="a-release-name-that-is-long-enough-to-overflow-dns-labels-x")
    for obj in long.objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        for key, value in obj["metadata"].get("labels", {}).items():
            assert len(value) <= 63, (name, key, value)


# -- images and commands -----------------------------------------------------------------


def _containers(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for _, spec in pod_specs(rendered) for c in spec["containers"]}


def test_one_image_runs_every_component_with_its_command() -> None:
    containers = _containers(render("secret-auth"))
    assert len({c["image"] for c in containers.values()}) == 1
    assert containers["api"]["command"] == ["conveyor", "api"]
    assert containers["worker"]["command"] == ["conveyor", "worker"]
    assert containers["init"]["command"] == ["conveyor", "init"]
    assert containers["operator"]["command"] == [
        "kopf",
        "run",
        "--standalone",
        "--namespace=tasks",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=json",  # config.logFormat
        "/app/k8s/controller/tasktypes.py",
    ]


def test_image_by_digest() -> None:
    rendered = render("hardened")
    digest = rendered.values["image"]["digest"]
    for container in _containers(rendered).values():
        assert container["image"] == f"{rendered.values['image']['repository']}@{digest}"


def test_every_conveyor_variable_is_a_real_setting(rendered: Rendered) -> None:
    from conveyor.settings import Settings

    known = {"CONVEYOR_" + f.upper() for f in Settings.__dataclass_fields__ if f != "extra"}
    operator_only = {"CONVEYOR_NAMESPACE", "CONVEYOR_CONFIGMAP", "CONVEYOR_OPERATOR_RESYNC_SECONDS"}
    handler_modules = {"CONVEYOR_HANDLER_MODULES"}  # read by worker.handlers (workers, operator)
    for name, container in _containers(rendered).items():
        for var in env_of(container):
            if var.startswith("CONVEYOR_"):
                allowed = known | (operator_only if name == "operator" else set())
                allowed |= handler_modules if name in ("worker", "operator") else set()
                assert var in allowed, f"{name} sets {var}, which nothing reads"


def _settings_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from conveyor.settings import Settings

    for var, value in env_of(container).items():
        monkeypatch.setenv(var, value)
    return Settings.from_env()


def test_the_settings_read_back_from_the_rendered_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    containers = _containers(render("secret-auth"))
    api = _settings_of(containers["api"], monkeypatch)
    assert (api.queue, api.dlq, api.table, api.bucket) == (
        "conveyor-tasks",
        "conveyor-tasks-dlq",
        "conveyor-tasks",
        "conveyor-data",
    )
    assert api.region == "us-east-1"
    assert api.api_host == "0.0.0.0" and api.api_port == 8000
    assert api.tasktypes == "/etc/conveyor/tasktypes"
    worker = _settings_of(containers["worker"], monkeypatch)
    assert worker.worker_concurrency == 8 and worker.worker_metrics_port == 9100
    assert env_of(containers["worker"])["AWS_ENDPOINT_URL"] == "http://localstack.localstack.svc:4566"
    assert containers["worker"]["envFrom"] == [{"secretRef": {"name": "conveyor-aws"}}]


# -- api ---------------------------------------------------------------------------------


def test_api_probes_service_and_pdb() -> None:
    rendered = render("default")
    deployment = rendered.one("Deployment", f"{RELEASE}-api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert env_of(container)["CONVEYOR_API_PORT"] == str(port)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = rendered.one("Service", f"{RELEASE}-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not rendered.find("Ingress")


def test_ingress_routes_to_the_api_service() -> None:
    rendered = render("ingress")
    ingress = rendered.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "conveyor-tls", "hosts": ["tasks.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = rendered.one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_helm_test_hook_calls_readyz_on_the_api_service() -> None:
    rendered = render("default")
    pod = rendered.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["command"][-1]
    service = rendered.one("Service", f"{RELEASE}-api")
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"


# -- auth --------------------------------------------------------------------------------


def test_an_existing_token_secret_is_mounted_and_none_generated() -> None:
    rendered = render("hardened")
    assert not rendered.find("Secret")
    api = rendered.one("Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    volume = next(v for v in api["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "conveyor-tokens"


def test_auth_is_off_only_when_set_false_explicitly() -> None:
    rendered = render("auth-off")
    api = rendered.one("Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    assert env_of(api["containers"][0])["CONVEYOR_AUTH_ENABLED"] == "false"
    assert "auth" not in {v["name"] for v in api["volumes"]}
    assert not rendered.find("Secret")
    assert "NONE: auth.enabled=false" in rendered.notes
    # Removing the key (null) or any non-boolean refuses to render.
    for value in (None, "", "off", 0):
        with pytest.raises(helm.HelmError):
            render_values({"auth": {"enabled": value}})


def test_the_rate_limit_is_one_the_api_can_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.ratelimit import parse_limits

    container = _containers(render("default"))["api"]
    settings = _settings_of(container, monkeypatch)
    assert settings.auth_enabled is True
    assert parse_limits(settings.rate_limit)


# -- worker and KEDA ---------------------------------------------------------------------


def test_worker_termination_grace_outlasts_the_poll_and_the_task_grace(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _name, spec in pod_specs(rendered):
        container = spec["containers"][0]
        if container["name"] != "worker":
            continue
        settings = _settings_of(container, monkeypatch)
        longest = rendered.values.get("worker", {}).get("longestTaskTimeoutSeconds", 300)
        assert settings.shutdown_grace_seconds == longest
        assert (
            spec["terminationGracePeriodSeconds"]
            > settings.shutdown_grace_seconds + settings.poll_wait_seconds
        )


def test_keda_scaled_object_on_the_sqs_queue() -> None:
    rendered = render("default")
    deployment = rendered.one("Deployment", f"{RELEASE}-worker")
    assert "replicas" not in deployment["spec"]  # the HPA that KEDA creates owns it
    scaled = rendered.one("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{RELEASE}-worker",
    }
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"], scaled["cooldownPeriod"]) == (0, 20, 300)
    # One trigger per priority level, summed (tests/chart/test_lanes.py); the normal one here.
    _high, trigger, _low = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue" and trigger["name"] == "sqs_normal"
    assert trigger["metadata"] == {
        "queueURL": "conveyor-tasks",
        "awsRegion": "us-east-1",
        "queueLength": "8",  # the worker concurrency
        "activationQueueLength": "0",
        "scaleOnInFlight": "true",
        "scaleOnDelayed": "false",
    }
    auth = rendered.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    # No role in the default values: KEDA's own identity (tests/chart/test_keda.py has every path).
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}


def test_keda_with_a_secret_and_a_local_endpoint() -> None:
    rendered = render("secret-auth")
    trigger = rendered.one("ScaledObject")["spec"]["triggers"][0]
    assert trigger["metadata"]["awsEndpoint"] == "http://localstack.localstack.svc:4566"
    auth = rendered.one("TriggerAuthentication")["spec"]
    assert auth == {
        "secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": "conveyor-aws", "key": "AWS_ACCESS_KEY_ID"},
            {"parameter": "awsSecretAccessKey", "name": "conveyor-aws", "key": "AWS_SECRET_ACCESS_KEY"},
        ]
    }
    with pytest.raises(helm.HelmError, match="existingSecret"):
        render_values({"worker": {"keda": {"auth": {"type": "secret"}}}})


def test_keda_assumes_a_dedicated_role_when_given() -> None:
    auth = render("hardened").one("TriggerAuthentication")["spec"]
    assert auth == {
        "podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::123456789012:role/conveyor-keda-reader"}
    }
    triggers = render("hardened").one("ScaledObject")["spec"]["triggers"]
    assert [t["metadata"]["queueURL"] for t in triggers] == [
        f"https://sqs.eu-west-1.amazonaws.com/123456789012/conveyor-tasks{suffix}"
        for suffix in ("-high", "", "-low")
    ]


def test_without_keda_a_fixed_replica_count() -> None:
    rendered = render("keda-off")
    assert not rendered.find("ScaledObject") and not rendered.find("TriggerAuthentication")
    assert rendered.one("Deployment", f"{RELEASE}-worker")["spec"]["replicas"] == 3


def test_scaled_job_mode_runs_one_shot_workers() -> None:
    rendered = render("scaledjob")
    assert not rendered.find("Deployment", f"{RELEASE}-worker") and not rendered.find("ScaledObject")
    job = rendered.one("ScaledJob")["spec"]
    pod = job["jobTargetRef"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = env_of(pod["containers"][0])
    assert env["CONVEYOR_WORKER_MAX_TASKS"] == "1"
    assert job["jobTargetRef"]["backoffLimit"] == 0
    assert job["jobTargetRef"]["activeDeadlineSeconds"] == 7200 + 300
    assert job["rollout"] == {"strategy": "gradual"}
    assert job["maxReplicaCount"] == 50
    assert job["triggers"][0]["metadata"]["queueLength"] == "1"
    with pytest.raises(helm.HelmError, match="keda"):
        render_values({"worker": {"mode": "scaledJob", "keda": {"enabled": False}}})


# -- operator, registry ConfigMap, RBAC --------------------------------------------------


def test_the_registry_configmap_is_mounted_and_readable(tmp_path: Any) -> None:
    rendered = render("default")
    # The operator creates and owns it (tests/k8s/test_chart.py); the chart only mounts it.
    assert not rendered.find("ConfigMap", f"{RELEASE}-tasktypes")
    operator = _containers(rendered)["operator"]
    assert env_of(operator)["CONVEYOR_CONFIGMAP"] == f"{RELEASE}-tasktypes"
    assert env_of(operator)["CONVEYOR_NAMESPACE"] == "tasks"
    for name in ("api", "worker"):
        spec = next(s for n, s in pod_specs(rendered) if n == f"Deployment/{RELEASE}-{name}")
        volume = next(v for v in spec["volumes"] if v["name"] == "tasktypes")
        assert volume["configMap"] == {"name": f"{RELEASE}-tasktypes", "optional": True}
        container = spec["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tasktypes")
        assert env_of(container)["CONVEYOR_TASKTYPES"] == mount["mountPath"]


def test_operator_rbac_is_limited_to_its_resources() -> None:
    rendered = render("default")
    role = rendered.one("Role", f"{RELEASE}-operator")
    # Exactly what the operator uses: tests/k8s/test_rbac.py. Here: only these resources, and
    # reading or changing a ConfigMap only by the registry's name.
    assert {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in role["rules"]} == {
        (("conveyor.dev",), ("tasktypes",)),
        (("conveyor.dev",), ("tasktypes/status",)),
        (("conveyor.dev",), ("taskschedules",)),
        (("conveyor.dev",), ("taskschedules/status",)),
        (("",), ("configmaps",)),
        (("",), ("events",)),
    }
    for rule in role["rules"]:
        if rule["resources"] == ["configmaps"] and rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == [f"{RELEASE}-tasktypes"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
    assert not rendered.find("ClusterRole") and not rendered.find("ClusterRoleBinding")
    binding = rendered.one("RoleBinding", f"{RELEASE}-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    operator = rendered.one("Deployment", f"{RELEASE}-operator")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": operator["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": "tasks",
        }
    ]
    assert operator["spec"]["replicas"] == 1 and operator["spec"]["strategy"]["type"] == "Recreate"


def test_the_chart_crd_is_the_single_source_copy() -> None:
    from tests.chart.render import ROOT

    # The chart's crds/ holds the only copy of the TaskType and TaskSchedule CRDs.
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [
        "taskschedules.conveyor.dev.yaml",
        "tasktypes.conveyor.dev.yaml",
    ]
    assert not list((ROOT / "k8s").rglob("*.conveyor.dev.yaml"))


def test_the_example_tasktypes_validate_against_the_chart_crd() -> None:
    import yaml

    from tests.chart.render import ROOT

    examples = sorted((ROOT / "k8s" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                validate_custom(doc)


# -- AWS ---------------------------------------------------------------------------------


def test_irsa_annotations_and_the_init_hook() -> None:
    rendered = render("hardened")
    accounts = {a["metadata"]["name"]: a for a in rendered.find("ServiceAccount")}
    assert accounts[RELEASE]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/conveyor"
    }
    init_account = accounts[f"{RELEASE}-init"]["metadata"]["annotations"]
    assert init_account["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/conveyor-provisioner"
    assert init_account["helm.sh/hook"] == "pre-install,pre-upgrade"
    job = rendered.one("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The account exists before the Job: hooks run in weight order.
    assert int(init_account["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-init"
    init_env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    api_env = env_of(_containers(rendered)["api"])
    for var in ("AWS_REGION", "CONVEYOR_QUEUE", "CONVEYOR_DLQ", "CONVEYOR_TABLE", "CONVEYOR_BUCKET"):
        assert init_env[var] == api_env[var]
    assert init_env["CONVEYOR_MAX_RECEIVE_COUNT"] == "50"


def test_no_init_job_by_default() -> None:
    assert not render("default").find("Job")
