"""skaffold.yaml and the dev manifests agree with the image, the chart and each other."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from tests.chart.render import RELEASE, ROOT, env_of, render_values, validate_object

SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
DEV = ROOT / "k8s" / "dev"


def _profile(name: str) -> dict[str, Any]:
    return next(p for p in SKAFFOLD["profiles"] if p["name"] == name)


def _dev_manifests() -> list[dict[str, Any]]:
    docs = []
    for pattern in _profile("dev")["manifests"]["rawYaml"]:
        paths = sorted(ROOT.glob(pattern))
        assert paths, pattern
        for path in paths:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_skaffold_builds_the_image_and_deploys_the_chart() -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", SKAFFOLD["apiVersion"]) and SKAFFOLD["kind"] == "Config"
    (artifact,) = SKAFFOLD["build"]["artifacts"]
    assert (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).is_file()
    image = artifact["image"]
    releases = SKAFFOLD["deploy"]["helm"]["releases"] + _profile("dev")["deploy"]["helm"]["releases"]
    for release in releases:
        assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
        templates = release["setValueTemplates"]
        assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
        assert templates["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"
        for values_file in release.get("valuesFiles", []):
            assert (ROOT / values_file).is_file()


def test_port_forward_targets_the_rendered_api_service() -> None:
    dev = _profile("dev")
    release = dev["deploy"]["helm"]["releases"][0]
    rendered = render_values(
        yaml.safe_load((ROOT / release["valuesFiles"][0]).read_text()),
        name=release["name"],
        namespace=release["namespace"],
    )
    services = {s["metadata"]["name"]: s for s in rendered.find("Service")}
    for forward in [*SKAFFOLD["portForward"], *dev["portForward"]]:
        if forward["resourceName"].startswith(release["name"]):
            service = services[forward["resourceName"]]
            assert forward["namespace"] == release["namespace"]
            assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}


def test_dev_manifests_are_valid_and_hardened() -> None:
    docs = _dev_manifests()
    for doc in docs:
        validate_object(doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
    moto = next(c for c in spec["containers"] if c["name"] == "moto")
    assert moto["image"].split(":")[1].split(".")[0] == version("moto").split(".")[0]


def test_the_dev_chart_points_at_the_moto_service_and_provisions_the_same_names() -> None:
    docs = _dev_manifests()
    service = next(d for d in docs if d["kind"] == "Service")
    values = yaml.safe_load((DEV / "values.yaml").read_text())
    release = _profile("dev")["deploy"]["helm"]["releases"][0]
    rendered = render_values(values, name=release["name"], namespace=release["namespace"])
    api = next(d for d in rendered.find("Deployment") if d["metadata"]["name"] == f"{RELEASE}-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    port = service["spec"]["ports"][0]["port"]
    namespace = service["metadata"]["namespace"]
    assert (
        env["AWS_ENDPOINT_URL"]
        == f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
    )
    assert namespace == release["namespace"]
    # The credentials Secret the chart reads is the one the dev manifests create.
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert values["aws"]["credentials"]["existingSecret"] == secret["metadata"]["name"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    # moto's provisioning sidecar creates exactly the resources the chart's pods use.
    moto_pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    provision = env_of(next(c for c in moto_pod["containers"] if c["name"] == "provision"))
    for var in ("AWS_REGION", "CONVEYOR_QUEUE", "CONVEYOR_DLQ", "CONVEYOR_TABLE", "CONVEYOR_BUCKET"):
        assert provision[var] == env[var], var
    # The image skaffold builds is the one the sidecar names (skaffold substitutes it).
    assert (
        next(c for c in moto_pod["containers"] if c["name"] == "provision")["image"]
        == (SKAFFOLD["build"]["artifacts"][0]["image"])
    )


def test_makefile_has_the_chart_and_image_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("chart-check", "image"):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert Path(ROOT / "Dockerfile").is_file()
