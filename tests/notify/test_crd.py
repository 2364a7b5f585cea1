"""``spec.notify`` in the TaskType CRD, judged as the API server would (defaulting, schema,
CEL run by a real CEL engine: tests/k8s/apiserver.py), and read by the registry the same."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.registry import Notify, TaskType
from tests.k8s import apiserver
from tests.k8s.conftest import CRD

schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def problems(notify: Any) -> list[str]:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "TaskType",
        "metadata": {"name": "x"},
        "spec": {"handler": "echo", "notify": notify},
    }
    return apiserver.object_problems(schema, doc)


@pytest.mark.parametrize(
    ("notify", "ok"),
    [
        ({"url": "https://hooks.example.com/conveyor"}, True),
        ({"url": "HTTPS://hooks.example.com/x"}, True),
        ({"url": "http://hooks.example.com/x"}, False),  # clear text only to private networks
        ({"url": "http://hooks.svc.cluster.local/x", "allowPrivateNetworks": True}, True),
        ({"url": "http://10.0.0.1/x", "allowPrivateNetworks": False}, False),
        ({"allowPrivateNetworks": True}, True),  # opens private networks to the tasks' own URLs
        ({}, True),
        ({"url": "ftp://hooks.example.com/x"}, False),
        ({"url": "https://"}, False),
        ({"url": "hooks.example.com/x"}, False),
        ({"url": "https://hooks.example.com/" + "x" * 2048}, False),
        ({"url": "https://a.example/x", "allowPrivateNetworks": "yes"}, False),
    ],
)
def test_notify_in_the_crd(notify, ok):
    found = problems(notify)
    assert (found == []) is ok, found


def test_the_registry_reads_notify_as_the_crd_defaults_it():
    defaulted = apiserver.with_defaults(
        schema, {"spec": {"handler": "echo", "notify": {"url": "https://a.example/h"}}}
    )
    read = TaskType.from_spec("x", defaulted["spec"])
    assert read.notify == Notify("https://a.example/h", False)
    assert TaskType.from_json(read.to_json()) == read  # through the operator's ConfigMap
    assert TaskType.from_spec("x", {"handler": "echo"}).notify is None
    private = TaskType.from_spec("x", {"handler": "echo", "notify": {"allowPrivateNetworks": True}})
    assert private.notify == Notify(None, True)
