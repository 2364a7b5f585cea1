"""The chart mounts ``webhooks.existingSecret`` where the workers read signing secrets, in
both worker modes, through the real Helm engine; and nowhere when it is unset."""

from __future__ import annotations

import pytest

from conveyor.settings import Settings
from tests.chart.render import pod_specs, render_values, validate_object


def worker_pods(values: dict) -> list[dict]:
    rendered = render_values(values)
    for obj in rendered.objects:
        validate_object(obj)
    return [spec for name, spec in pod_specs(rendered) if "worker" in name.split("/")[1]]


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
def test_the_webhook_secret_is_mounted_read_only_where_the_worker_reads_it(mode):
    [pod] = worker_pods({"webhooks": {"existingSecret": "conveyor-webhooks"}, "worker": {"mode": mode}})
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "conveyor-webhooks"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == Settings().webhook_secrets_dir
    assert "CONVEYOR_WEBHOOK_SECRETS_DIR" not in {e["name"] for e in container.get("env", [])}


def test_no_secret_no_volume():
    [pod] = worker_pods({})
    assert not [v for v in pod["volumes"] if "secret" in v and v["name"] == "webhook-secrets"]


def test_a_bad_secret_name_fails_the_install():
    with pytest.raises(Exception, match="existingSecret"):
        render_values({"webhooks": {"existingSecret": "Not_A_Name"}})
