"""Priority lanes as pure functions: the weighted pick, the weights setting, the queue names."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor.lanes import WeightedPicker, derived_queue, parse_weights
from conveyor.model import Priority
from conveyor.settings import Settings

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW
DEFAULT = {H: 6, N: 3, L: 1}


@pytest.mark.parametrize(
    ("weights", "candidates", "expected"),
    [
        # smooth: the heavy level's picks are spread out, never six in a row
        (DEFAULT, {H, N, L}, [H, N, H, H, N, H, L, H, N, H]),
        (DEFAULT, {H, L}, [H, H, H, L, H, H, H]),
        (DEFAULT, {N, L}, [N, N, L, N]),
        (DEFAULT, {L}, [L, L, L]),
        ({H: 1, N: 1, L: 1}, {H, N, L}, [H, N, L, H, N, L]),
        ({H: 1, N: 1, L: 5}, {H, L}, [L, L, H, L, L, L, L, L]),
        (DEFAULT, set(), [None]),
    ],
)
def test_smooth_weighted_round_robin(weights, candidates, expected):
    picker = WeightedPicker(weights)
    assert [picker.pick(candidates) for _ in expected] == expected


@pytest.mark.parametrize("candidates", [{H, N, L}, {H, L}, {N, L}, {H, N}])
def test_every_level_gets_exactly_its_weight_share_of_each_cycle(candidates):
    picker = WeightedPicker(DEFAULT)
    cycle = sum(DEFAULT[p] for p in candidates)
    for _ in range(5):
        got = Counter(picker.pick(candidates) for _ in range(cycle))
        assert got == {p: DEFAULT[p] for p in candidates}


def test_a_level_back_from_empty_brings_no_saved_up_credit():
    """High was empty for a long stretch of low picks: when it comes back it takes its share
    from then on, not a burst that starves low."""
    picker = WeightedPicker({H: 1, N: 1, L: 1})
    for _ in range(100):
        picker.pick({L})
    assert [picker.pick({H, L}) for _ in range(4)] == [H, L, H, L]


def test_a_new_high_task_is_picked_at_once_against_a_low_backlog():
    picker = WeightedPicker(DEFAULT)
    for _ in range(50):
        assert picker.pick({L}) is L
    assert picker.pick({H, L}) is H


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("high=6,normal=3,low=1", DEFAULT),
        ("", DEFAULT),
        ("low=2", {H: 6, N: 3, L: 2}),
        (" High = 10 , LOW=1 ,", {H: 10, N: 3, L: 1}),
        ("high=1,normal=1,low=1", {H: 1, N: 1, L: 1}),
    ],
)
def test_weights_parse(raw, expected):
    assert parse_weights(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("urgent=5", "'urgent=5' is not level=weight"),
        ("high", "'high' is not level=weight"),
        ("high=0", "weight of high must be a whole number from 1 to 1000, not '0'"),
        ("low=-1", "not '-1'"),
        ("normal=2.5", "not '2.5'"),
        ("high=1001", "not '1001'"),
    ],
)
def test_bad_weights_fail_at_start_naming_the_variable(raw, message, monkeypatch):
    with pytest.raises(ValueError, match="CONVEYOR_PRIORITY_WEIGHTS") as raised:
        parse_weights(raw)
    assert message in str(raised.value)
    monkeypatch.setenv("CONVEYOR_PRIORITY_WEIGHTS", raw)
    with pytest.raises(ValueError, match="CONVEYOR_PRIORITY_WEIGHTS"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {H: "conveyor-tasks-high", N: "conveyor-tasks", L: "conveyor-tasks-low"}),
        (
            {"CONVEYOR_QUEUE": "https://sqs.eu-west-1.amazonaws.com/1/jobs"},
            {
                H: "https://sqs.eu-west-1.amazonaws.com/1/jobs-high",
                N: "https://sqs.eu-west-1.amazonaws.com/1/jobs",
                L: "https://sqs.eu-west-1.amazonaws.com/1/jobs-low",
            },
        ),
        (
            {"CONVEYOR_QUEUE": "jobs", "CONVEYOR_QUEUE_URL_HIGH": "https://sqs.x/1/urgent"},
            {H: "https://sqs.x/1/urgent", N: "jobs", L: "jobs-low"},
        ),
        (
            {"CONVEYOR_QUEUE": "jobs", "CONVEYOR_QUEUE_URL_LOW": "bulk"},
            {H: "jobs-high", N: "jobs", L: "bulk"},
        ),
    ],
)
def test_each_level_has_its_queue_derived_when_unset(env, expected, monkeypatch):
    for name in ("CONVEYOR_QUEUE", "CONVEYOR_QUEUE_URL_HIGH", "CONVEYOR_QUEUE_URL_LOW"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    assert {p: s.queue_of(p) for p in (H, N, L)} == expected


def test_derived_queue_of_a_url_with_a_trailing_slash():
    assert derived_queue("https://sqs.x/1/jobs/", L) == "https://sqs.x/1/jobs-low"


@pytest.mark.parametrize(
    "env",
    [
        {"CONVEYOR_QUEUE": "jobs", "CONVEYOR_QUEUE_URL_HIGH": "jobs"},
        {"CONVEYOR_QUEUE_URL_HIGH": "shared", "CONVEYOR_QUEUE_URL_LOW": "shared"},
    ],
)
def test_two_levels_on_one_queue_fail_at_start_naming_the_variables(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="three different queues"):
        Settings.from_env()
