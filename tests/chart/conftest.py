from __future__ import annotations

import functools

import pytest
from kubernetes_validate import utils as kv

from tests.chart.render import Rendered, render, values_files

# kubernetes-validate re-reads the 1.3 MB definitions file for every object; the schemas
# never change within a run, so read each once.
kv.schema_contents = functools.cache(kv.schema_contents)

MATRIX = ["default", *values_files()]


@pytest.fixture(scope="module", params=MATRIX)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """The chart rendered (once per process) with each values file of the matrix."""
    return render(request.param)
