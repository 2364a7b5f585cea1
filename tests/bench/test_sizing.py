"""The sizing model and the report's targets: pure arithmetic on given figures."""

from __future__ import annotations

import math

import pytest

from benchmarks import sizing, submit
from benchmarks.costs import Layout
from benchmarks.report import Results, Summary, _sizing_section, _targets
from benchmarks.submit import SubmitRun
from benchmarks.throughput import Run

INPUTS = sizing.Inputs(
    worker_cpu=0.005,
    api_cpu=0.002,
    sqs_requests=1.4,
    dynamodb_requests=3.0,
    wru=10.0,
    rru=0.0,
    hot_key_wru=2.0,
)


def test_a_pod_is_bound_by_its_slots_its_core_or_its_receive_loop():
    fast = sizing.size(INPUTS, 100, 0.010)
    # 8 slots / (2 x 10 ms + 5 ms) = 320/s; the core at 70%: 0.7 / 5 ms = 140/s.
    assert fast.bound == "CPU" and fast.per_pod == pytest.approx(140)
    slow = sizing.size(INPUTS, 100, 0.030)
    assert slow.bound == "slots" and slow.per_pod == pytest.approx(8 / 0.065)
    # At the CPU-bound concurrency the pod fills its planned core: 140/s x 65 ms = 9.1 slots.
    assert slow.slots_for_cpu == 10 and slow.worker_pods_at_cpu == 1
    wide = sizing.size(sizing.Inputs(**{**INPUTS.__dict__, "slots": 64, "worker_cpu": 0.001}), 100, 0.2)
    assert wide.bound == "receive" and wide.per_pod == pytest.approx(10 / 0.2)


def test_pods_vcpu_and_requests_scale_with_the_rate():
    one, ten = sizing.size(INPUTS, 1_000, 0.030), sizing.size(INPUTS, 10_000, 0.030)
    assert one.worker_pods == math.ceil(1_000 / (8 / 0.065)) == 9
    assert ten.worker_pods == math.ceil(10_000 / (8 / 0.065))
    assert one.worker_vcpu == pytest.approx(1_000 * 0.005 / 0.7)
    assert one.api_vcpu == pytest.approx(1_000 * 0.002 / 0.7) and one.api_pods == 3
    assert (one.sqs_per_s, one.dynamodb_per_s, one.wru_per_s) == pytest.approx((1_400, 3_000, 10_000))
    assert ten.wru_per_s == pytest.approx(10 * one.wru_per_s)


def test_the_monthly_bill_is_requests_and_units_at_list_prices_plus_vcpu():
    z = sizing.size(INPUTS, 1_000, 0.010)
    tasks = 1_000 * 730 * 3600
    assert z.sqs_usd == pytest.approx(tasks * 1.4 * 0.40 / 1e6)
    assert z.dynamodb_usd == pytest.approx(tasks * 10 * 0.625 / 1e6)  # $16,425 a month
    assert z.compute_usd == pytest.approx((z.worker_vcpu + z.api_vcpu) * 730 * 0.0425)
    assert z.usd == pytest.approx(z.sqs_usd + z.dynamodb_usd + z.compute_usd)


def test_the_quotas_that_bite_are_named():
    assert sizing.size(INPUTS, 100, 0.030).limits == []
    # 1,000 tasks/s: 2,000 write units/s on the status key, over one partition's 1,000.
    assert [m for m in sizing.size(INPUTS, 1_000, 0.030).limits if "partition" in m]
    big = sizing.size(INPUTS, 10_000, 0.030).limits
    assert any("40,000" in m for m in big)  # 100,000 WRU/s against the table quota
    assert not any("in flight" in m for m in big)  # ~11,000 of 120,000
    assert not sizing.size(sizing.Inputs(**{**INPUTS.__dict__, "hot_key_wru": 0.0}), 1_000, 0.03).limits


def _run(system: str, latency: float, n: int, seconds: float, cpu: dict[str, float], wru: int = 0) -> Run:
    requests = {"dynamodb.PutItem": n, "dynamodb.UpdateItem": 2 * n, "sqs.SendMessage": n}
    return Run(system, latency, n, seconds, 0.0, 0, requests, dict(requests), cpu | {"wall": seconds}, 50.0)


def _results() -> Results:
    runs = []
    for latency in (0.0, 15.0):
        runs += [
            _run("conveyor", latency, 100, 1.0, {"worker": 0.5, "api": 0.2, "moto": 0.9}),
            _run("conveyor-batch", latency, 100, 1.0, {"worker": 0.5, "api": 0.1, "moto": 0.9}),
            _run("floor", latency, 100, 1.05, {"worker": 0.4, "moto": 0.8}),
            _run("floor-batch", latency, 100, 0.8, {"worker": 0.4, "moto": 0.8}),
            _run("celery-dynamodb", latency, 100, 1.0 if latency == 0 else 2.5, {"worker": 0.3}),
        ]
    subs = [SubmitRun("floor", 10, 1.0, [0.01] * 100, {"client": 0.2})]
    return Results(meta={"submitters": 8, "worker_concurrency": 8}, throughput=runs, submit=subs)


def test_the_targets_hold_conveyor_to_the_floor_and_to_celery_with_results():
    rows = {line.split("|")[1].strip(): line for line in _targets(Summary(_results()), [0.0, 15.0])[2:]}
    # Own CPU: 2 ms (API) + 5 ms (worker) against the floor's 2 ms (its client) + 4 ms.
    own = rows["own CPU per task ≤ the floor's (+0 ms)"]
    assert "2.00 (API process) + 5.00 (worker) = 7.00 ms" in own
    assert "2.00 (client, 10 clients) + 4.00 (worker) = 6.00 ms" in own and own.endswith("**no** |")
    assert rows["end-to-end ≥ 90% of the floor, single submit"].endswith("| yes |")  # 105%
    assert rows["end-to-end ≥ 90% of the floor, batch submit"].endswith("**no** |")  # 80%
    assert "1.00x" in rows["≥ 1x Celery + DynamoDB results at +0 ms"]
    assert rows["≥ 1x Celery + DynamoDB results at +0 ms"].endswith("| yes |")
    assert "2.50x" in rows["≥ 2x Celery + DynamoDB results at +15 ms"]
    assert "9.0" in rows["DynamoDB write units per task ≤ 6"]  # 3 to create + 3 per status change


def test_the_sizing_section_is_computed_from_the_run():
    text = "\n".join(_sizing_section(Summary(_results()), [0.0, 15.0]))
    expected = sizing.size(
        sizing.Inputs(
            worker_cpu=0.005,
            api_cpu=0.002,
            sqs_requests=1.0,
            dynamodb_requests=3.0,
            wru=Layout.conveyor().update * 2 + Layout.conveyor().insert,  # the table's, as measured
            rru=0.0,
            hot_key_wru=2.0,
        ),
        10_000,
        0.030,
    )
    assert f"**${expected.usd:,.0f}**" in text
    assert _sizing_section(Summary(Results(meta={})), [0.0])[0].startswith("Not computed")


def test_submit_runs_take_turns_between_systems(monkeypatch):
    order: list[str] = []

    class Fake:
        def __init__(self, key: str) -> None:
            self.key, self.queue_url = key, key

        def quiesce(self) -> None: ...

        def cpu_pids(self) -> dict[str, int]:
            return {}

        def submit_one(self, run: str) -> str:
            if not run.endswith("warmup"):
                order.append(self.key)
            return "id"

    class Stack:
        def drain(self, url: str) -> None: ...

    monkeypatch.setattr(submit, "get", lambda stack, key: Fake(key))
    runs = submit.measure(Stack(), 1, 2, ["a", "b"], [1])  # type: ignore[arg-type]
    assert order == ["a", "b", "a", "b"]
    assert [r.system for r in runs] == ["a", "b", "a", "b"] and "client" in runs[0].cpu
