"""The small built-ins: sleep's argument is checked before any clock is read."""

from __future__ import annotations

import json

import pytest

from conveyor.errors import PermanentError
from worker.handlers.basic import sleep


async def test_sleep_returns_what_it_slept(bare_ctx):
    assert await sleep({"seconds": 0.05}, bare_ctx()) == {"slept": 0.05}
    assert await sleep({"seconds": 0}, bare_ctx()) == {"slept": 0.0}


@pytest.mark.parametrize(
    "seconds",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -0.5,
        1e300,
        "NaN",
        "soon",
        None,
        True,
        [1],
        json.loads('{"s": NaN}')["s"],  # what a lenient JSON parser hands over
    ],
)
async def test_sleep_refuses_what_is_not_a_finite_duration(bare_ctx, seconds):
    with pytest.raises(PermanentError, match="seconds"):
        await sleep({"seconds": seconds}, bare_ctx())
