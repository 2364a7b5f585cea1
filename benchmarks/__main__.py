"""``python -m benchmarks`` (``make bench``): run every measurement, write the report.

Default: N = 150 tasks per end-to-end run, 5 runs per figure, writes docs/BENCHMARKS.md
and docs/benchmarks.png (under 10 minutes on a quiet 2-core machine). ``--quick``: a smoke run
(tiny N, one run each) that proves the harness works, written to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks import calls, flow, latency, live, submit, throughput
from benchmarks.profile import profile_worker
from benchmarks.report import Results, chart, check_sections, render
from benchmarks.stack import ROOT, Stack
from benchmarks.systems import ALL, SUBMITTERS, WORKER_CONCURRENCY

RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("throughput", "latency", "submit", "calls", "live", "flow", "profile")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) / 1024 / 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = float("nan")
    return f"{model}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    names = ["conveyor", "celery", "kombu", "boto3", "moto", "aiohttp", "pycurl"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny N, one run each; asserts no speeds")
    p.add_argument("--n", type=int, help="tasks per end-to-end run (default 150; quick 10)")
    p.add_argument("--runs", type=int, help="runs per figure (default 5; quick 1)")
    p.add_argument(
        "--latencies", default="0,15", help="added ms per AWS call, comma separated (default 0,15)"
    )
    p.add_argument("--latency-count", type=int, help="tasks per latency run (default 200; quick 10)")
    p.add_argument("--submit-count", type=int, help="submits per API run (default 100; quick 20)")
    p.add_argument("--clients", default="1,10,50", help="concurrent submit clients (default 1,10,50)")
    p.add_argument(
        "--live-clients", help="clients on each live stream, comma separated (default 1,10,50; quick 1,10)"
    )
    p.add_argument("--live-changes", type=int, help="changes timed per live-stream run (default 4; quick 2)")
    p.add_argument("--live-runs", type=int, help="runs of the live-stream section (default 3; quick 1)")
    p.add_argument("--flow-tasks", type=int, help="tasks per type in section 10 (default 100; quick 4)")
    p.add_argument("--systems", default=",".join(ALL), help="end-to-end systems (default: all)")
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run (default: {','.join(PARTS)})")
    p.add_argument(
        "--poll-wait",
        type=int,
        help="long-poll seconds for every worker (default: each system's own; quick: 1, so a "
        "stopped worker's pending poll expires at once)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy run of the worker")
    p.add_argument(
        "--from-results",
        type=Path,
        help="measure nothing: re-render the report from a results JSON (benchmarks/results/latest.json)",
    )
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="raw results (default benchmarks/results)"
    )
    p.add_argument(
        "--out", type=Path, help="report path (default docs/BENCHMARKS.md; quick: benchmarks/results/)"
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (10 if quick else 150)
    args.runs = args.runs or (1 if quick else 5)
    args.latency_count = args.latency_count or (10 if quick else 200)
    args.submit_count = args.submit_count or (20 if quick else 100)
    args.latencies = [float(v) for v in args.latencies.split(",") if v.strip()]
    args.clients = [int(v) for v in args.clients.split(",") if v.strip()]
    live_clients = args.live_clients or ("1,10" if quick else "1,10,50")
    args.live_clients = [int(v) for v in live_clients.split(",") if v.strip()]
    args.live_changes = args.live_changes or (2 if quick else 4)
    args.live_runs = args.live_runs or (1 if quick else 3)
    args.flow_tasks = args.flow_tasks or (4 if quick else 100)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = [s for s in args.systems if s not in ALL] + [s for s in args.only if s not in PARTS]
    if unknown:
        p.error(
            f"unknown system or part: {', '.join(unknown)} "
            f"(systems: {', '.join(ALL)}; parts: {', '.join(PARTS)})"
        )
    if quick and args.poll_wait is None:
        args.poll_wait = 1
    if quick or args.no_profile:
        args.only.discard("profile")
    if args.out is None:
        args.out = RESULTS / "BENCHMARKS-quick.md" if quick else ROOT / "docs" / "BENCHMARKS.md"
    return args


def write(results: Results, out: Path) -> int:
    """Chart and report; returns the exit status (1 if a section is missing)."""
    from benchmarks.analysis import ANALYSIS

    results.meta["analysis"] = ANALYSIS
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_name("benchmarks-quick.png" if results.meta.get("quick") else "benchmarks.png")
    chart(results, png)
    report = render(results, png.name)
    out.write_text(report)
    print(report)
    missing = check_sections(report)
    if missing:
        print(f"report is missing sections: {missing}", file=sys.stderr)
        return 1
    print(f"wrote {out} and {png}", file=sys.stderr)
    return 0


def measure_on_stack(
    args: argparse.Namespace,
    results: Results,
    latency_keys: list[str],
    submit_keys: list[str],
    results_dir: Path,
    progress: Callable[[str], None],
) -> None:
    """The parts that run on one moto server and the systems' real processes."""
    with Stack(poll_wait=args.poll_wait).running() as stack:
        if "throughput" in args.only:
            results.throughput = throughput.measure(
                stack, args.systems, args.latencies, args.n, args.runs, progress
            )
        if "latency" in args.only:
            results.latency = latency.measure(stack, args.latency_count, args.runs, latency_keys, progress)
        if "submit" in args.only:
            results.submit = submit.measure(
                stack, args.submit_count, args.runs, submit_keys, args.clients, progress
            )
        if "calls" in args.only:
            results.meta["calls_count"] = 5 if args.quick else 50
            results.calls = calls.measure(stack, results.meta["calls_count"])
            progress("moto CPU per call measured")
        if "profile" in args.only and "conveyor" in args.systems:
            results.meta["profile_n"] = min(args.n, 100)
            results.profile = profile_worker(
                stack, results.meta["profile_n"], results_dir / "conveyor-worker-py-spy.txt"
            )
            progress("worker profiled")
        for problem in stack.problems:
            results.meta["notes"].append(f"**Check failed**: {problem}.")


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse(argv)
    if args.from_results:
        return write(Results.from_json(json.loads(args.from_results.read_text())), args.out)
    started = time.monotonic()
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    results = Results(
        meta={
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "machine": machine(),
            "versions": versions(),
            "load_start": os.getloadavg()[0],
            "n": args.n,
            "runs": args.runs,
            "latencies_ms": args.latencies,
            "latency_count": args.latency_count,
            "submit_count": args.submit_count,
            "submitters": SUBMITTERS,
            "worker_concurrency": WORKER_CONCURRENCY,
            "notes": [],
            "poll_wait": args.poll_wait,
            "live_changes": args.live_changes,
            "live_runs": args.live_runs,
            "flow_tasks": args.flow_tasks,
        }
    )
    # Latency and submit compare Conveyor, Celery and the floor: those of --systems.
    latency_keys = [k for k in latency.SYSTEMS if k in args.systems]
    submit_keys = [k for k in submit.SYSTEMS if k in args.systems]
    steps = (
        ("throughput" in args.only) * len(args.systems) * len(args.latencies) * args.runs
        + ("latency" in args.only) * len(latency_keys) * args.runs
        + ("submit" in args.only) * len(submit_keys) * len(args.clients) * args.runs
        + ("calls" in args.only)
        + ("live" in args.only) * len(args.live_clients) * args.live_runs
        + ("flow" in args.only)
        + ("profile" in args.only)
    )
    bar = tqdm(total=steps, desc="make bench", unit="run", file=sys.stderr, dynamic_ncols=True)

    loads = [os.getloadavg()[0]]

    def progress(message: str) -> None:
        loads.append(os.getloadavg()[0])
        bar.update(1)
        bar.write(message, file=sys.stderr)

    if args.only - {"live", "flow"}:
        measure_on_stack(args, results, latency_keys, submit_keys, results_dir, progress)
    # The live streams run the API in-process over the memory adapters: nothing of the stack
    # above is needed, and its processes are gone by now, not competing for the cores.
    if "live" in args.only:
        results.live = live.measure(args.live_clients, args.live_changes, args.live_runs, progress)
    if "flow" in args.only:
        # Its own moto server and an in-process worker: also after the stack is gone.
        results.flow = [f.to_json() for f in flow.measure(args.flow_tasks)]
        progress("flow-limit costs measured")
    bar.close()
    results.meta["load_end"] = os.getloadavg()[0]
    results.meta["seconds"] = time.monotonic() - started
    results.meta["load_max"] = max(loads)
    cores = os.cpu_count() or 1
    results.meta["cores"] = cores
    # The run itself keeps both cores busy (moto, the worker, the API, the proxy and the
    # harness), so only the load before it started tells of someone else's work.
    if results.meta["load_start"] > cores / 2:
        results.meta["notes"].append(
            f"The machine was busy with other work (1-minute load average up to {max(loads):.1f} on "
            f"{cores} cores, {results.meta['load_start']:.1f} before the run started): these figures are "
            "noisy. Ratios hold up better than absolute numbers; re-run on a quiet machine."
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = json.dumps(results.to_json(), indent=1)
    (results_dir / f"results-{stamp}.json").write_text(raw)
    (results_dir / ("latest-quick.json" if args.quick else "latest.json")).write_text(raw)
    return write(results, args.out)


if __name__ == "__main__":
    sys.exit(main())
