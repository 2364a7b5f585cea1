"""GitOps: an offline render (`helm template`, what Argo CD runs) is a pure function of the
values, and API tokens never depend on the render being able to see the cluster."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from conveyor import tokens
from tests.chart.render import CHART, RELEASE, load_values, render, render_manifests, values_files

MATRIX = ["default", *values_files()]


@pytest.mark.parametrize("name", MATRIX)
def test_two_offline_renders_are_byte_identical(name: str) -> None:
    """Every template, NOTES included, twice from a freshly loaded chart: any random or
    time-dependent material (a token made where lookup sees nothing) shows up as a diff."""
    values = load_values(name)
    first = render_manifests(values)
    second = render_manifests(values)
    assert first.keys() == second.keys()
    changed = sorted(t for t in first if first[t] != second[t])
    assert not changed, f"templates that differ between two renders: {changed}"


def _api_pod(name: str) -> dict:
    return render(name).one("Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]


def test_an_offline_render_makes_no_token_and_the_api_fails_closed() -> None:
    rendered = render("default")
    assert not rendered.find("Secret"), "an offline render cannot know the current token"
    api = _api_pod("default")
    volume = next(v for v in api["volumes"] if v["name"] == "auth")
    # The chart's own Secret name, optional: the API starts and refuses every token (the
    # tokens file is missing) until the Secret exists; it re-reads the file when it appears.
    assert volume["secret"]["secretName"] == f"{RELEASE}-auth"
    assert volume["secret"]["optional"] is True
    assert "None was generated" in rendered.notes
    assert "auth.existingSecret" in rendered.notes
    assert "get secret" not in rendered.notes  # no command to read a token that isn't there


def test_the_existing_secret_is_the_gitops_path() -> None:
    """auth.existingSecret (sealed-secrets, External Secrets): nothing generated, the user's
    Secret mounted and required, so a wrong name stops the pod instead of passing silently."""
    rendered = render("hardened")
    assert load_values("hardened")["auth"]["existingSecret"] == "conveyor-tokens"
    assert not rendered.find("Secret")
    api = _api_pod("hardened")
    volume = next(v for v in api["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "conveyor-tokens"
    assert "optional" not in volume["secret"]
    assert volume["secret"]["items"] == [{"key": "tokens.json", "path": "tokens.json"}]
    env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert env["CONVEYOR_AUTH_TOKENS_FILE"] == "/etc/conveyor/auth/tokens.json"
    assert 'Tokens come from your Secret "conveyor-tokens"' in rendered.notes


def _parent_chart(tmp_path: Path, template: str) -> dict[str, str]:
    """Render a template of a parent chart that has this chart as its subchart: it can call
    the chart's named templates with inputs an offline render never produces (what a live
    lookup returns)."""
    parent = tmp_path / "parent"
    (parent / "templates").mkdir(parents=True, exist_ok=True)
    (parent / "Chart.yaml").write_text("apiVersion: v2\nname: parent\nversion: 0.1.0\n")
    if not (parent / "charts" / "conveyor").exists():
        shutil.copytree(CHART, parent / "charts" / "conveyor")
    (parent / "templates" / "case.yaml").write_text(template)
    with helm.Chart.load(parent) as chart:
        manifests = chart.render({}, name=RELEASE, namespace="tasks")
    return yaml.safe_load(manifests["parent/templates/case.yaml"]) or {}


def _token(secret: dict) -> str:
    return base64.b64decode(secret["data"]["token"]).decode()


def test_the_generated_secret_holds_the_token_and_only_its_hash(tmp_path: Path) -> None:
    """The Secret an online install writes, built by the chart's own template from a known
    token."""
    secret = _parent_chart(
        tmp_path,
        '{{ include "conveyor.authSecret" (dict "root" .Subcharts.conveyor "token" "s3cret-t0ken") }}\n',
    )
    assert secret["metadata"]["name"] == f"{RELEASE}-auth"
    assert _token(secret) == "s3cret-t0ken"
    document = json.loads(base64.b64decode(secret["data"]["tokens.json"]))
    assert document["tokens"][0]["sha256"] == hashlib.sha256(b"s3cret-t0ken").hexdigest()
    assert "s3cret-t0ken" not in json.dumps(document)
    # The API's own reader accepts the file and finds the token by its plaintext.
    entry = tokens.TokenSet.from_document(document).find("s3cret-t0ken")
    assert entry is not None and entry.name == "admin"
    assert entry.scopes == {tokens.SUBMIT, tokens.READ, tokens.ADMIN}


# What lookup "v1" "Secret" <namespace> "" returns: offline an empty map; live, a list whose
# items may or may not hold the token Secret (an upgrade, or a first install).
OFFLINE = "dict"


def _live(name: str, token: str) -> str:
    secret = f'dict "metadata" (dict "name" "{name}") "data" (dict "token" ("{token}" | b64enc))'
    return f'dict "items" (list ({secret}))'


def _generated(tmp_path: Path, secrets: str) -> dict:
    call = '(dict "root" .Subcharts.conveyor "secrets" (' + secrets + "))"
    return _parent_chart(tmp_path, '{{ include "conveyor.generatedAuthSecret" ' + call + " }}\n")


def test_only_a_live_lookup_generates_a_token_and_an_upgrade_keeps_it(tmp_path: Path) -> None:
    assert _generated(tmp_path, OFFLINE) == {}, "offline: no Secret, no random material"
    assert len(_token(_generated(tmp_path, 'dict "items" list'))) == 48  # a new namespace
    fresh = _token(_generated(tmp_path, _live("other", "x")))
    assert len(fresh) == 48 and fresh.isalnum() and fresh != "x"  # another Secret's token is not ours
    assert _token(_generated(tmp_path, _live(f"{RELEASE}-auth", "kept-t0ken"))) == "kept-t0ken"
