"""``zoodesk predict --cluster``: what handing each input to a Dask worker costs.

The same folder of ``--files`` uint16 TIFFs of ``--size`` x ``--size`` (the
synthetic nuclei-like images of ``bench_batch.py``, seeded) is predicted on the CPU
with the same model, in three ways, ``--rounds`` times, interleaved (the best round
of each counts), each into a fresh output folder:

* **in-process**: :func:`zoodesk.batch.runner.run_prediction`, what ``zoodesk
  predict`` runs without ``--cluster`` (reader and writer threads around one ONNX
  Runtime session with the runtime's default threads: all cores).
* **local:N** for each N of ``--workers``: :func:`zoodesk.cluster.execute.connect`
  (a LocalCluster of N single-threaded worker processes) and
  :func:`~zoodesk.cluster.execute.run_on_cluster`, what ``--cluster local:N`` runs.
  Each worker gives its session its share of the cores (cores // workers).

Every run is timed from its ``RunStarted`` event (set up done: inputs found, model
checked, first record written) to its ``RunFinished`` (last record saved): the
*wall* time W.  The cluster's start-up (``connect``), the run's set-up before
``RunStarted`` and the cluster's shutdown are reported apart.

Definitions (cluster runs; N tasks, one per file, on ``w`` workers):

* **busy** (per file, from the run record): ``read_seconds + seconds +
  write_seconds`` of its entry, the worker's own timings (``time.perf_counter``) of
  the three steps :func:`zoodesk.batch.steps.process_input` runs one after another:
  reading (decode, checks, sha256), prediction (normalising, ONNX Runtime,
  stitching) and writing (OME-TIFF, sha256).  The entries' ``started`` and
  ``finished`` would be the natural choice but are ISO timestamps to the whole
  second, too coarse for tasks of a fraction of a second; their sum is in the JSON
  for comparison only.
* **overhead per task** = (w x W - sum of busy) / N: all the worker time that went
  to anything but the files' three steps, per task.  It is split with Dask's task
  stream (the scheduler's record of each task's ``compute`` interval on its
  worker, same clock as this process here):

  - *in task*: compute interval minus busy: what :func:`zoodesk.cluster.worker.run_input`
    does around the steps (the event to the client, the session lookup), the first
    task on each worker also loading the model;
  - *between tasks*: the gaps between one task's end and the next one's start on a
    worker (reporting the result, getting the next task from the scheduler);
  - *start* and *tail*: a worker's idle time from ``RunStarted`` to its first task
    and from its last task to ``RunFinished`` (the last tasks, the final record).

  The fixed part (model loads, start, tail) shrinks per task with more files; the
  **steady** overhead per task, (between-task gaps + in-task extra of all but each
  worker's first task) / (N - w), does not.
* **overhead / inference**: the overhead per task over the files' mean
  ``inference_seconds`` in that run (target: under 5 %).
* **busy fraction** = sum of busy / (w x W).
* **client CPU per task**: this process's CPU time (``time.process_time``, all its
  threads) from ``RunStarted`` to ``RunFinished`` over N.  With ``local:N`` this
  process is the client, the scheduler and the workers' nannies: the central,
  single-process cost of a task (submitting, assigning, collecting the entry,
  saving the record).  Part of it is background that does not depend on the tasks
  (heartbeats, the nannies' memory monitors, the scheduler's periodic work): its
  rate r (CPU seconds per second) is measured while the started cluster idles for
  a few seconds before the run, and **task CPU** c = (CPU time - r x W) / N.

A larger cluster, estimated from the run with the most workers (one core each
here): each worker finishes a file every ``b + o`` seconds, with ``b`` the mean busy
time per file and ``o`` the steady overhead per task, so w workers give at most
``w / (b + o)`` files/s; one client and scheduler process handles at most
``(1 - r) / c`` tasks/s.  Estimate: ``min(w / (b + o), (1 - r) / c)``, the limit
reached at ``w = (1 - r) (b + o) / c`` workers.  It assumes workers with one core
each as fast as this machine's, storage that keeps up with w workers reading and
writing (on a cluster it is shared over the network), a scheduler whose cost per
task and background do not grow with the cluster (heartbeats grow with the
workers: optimistic), and enough files to amortise the fixed costs (cluster
start-up, one model load per worker, the tail).  On this machine the client shares
the cores with the workers, so ``o`` includes their competition for the
processor.  The observed wall / N at the largest run is printed too; it is the
inverse of the measured throughput, set by the workers, not a limit of the client.

Usage::

    .venv/bin/python benchmarks/bench_cluster.py [--files 80] [--size 512]
        [--workers 1,2] [--rounds 1] [--model ../shared/zoo-models/unet2d_nuclei_broad]
        [--json bench-results/cluster.json]

Prints a table and writes the JSON results.  Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import make_images

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "zoo-models" / "unet2d_nuclei_broad"
TARGET = 0.05
SCALE = (1, 2, 4, 8, 16, 32, 64, 128)
#: Seconds the started cluster idles before the run, to measure its background CPU use.
IDLE_SECONDS = 3.0


def _request(model: Path, folder: Path, out: Path) -> Any:
    from zoodesk.batch.request import PredictionRequest

    # threads=None: the runtime's default in this process, each worker's share of
    # its host's cores on a cluster.
    return PredictionRequest(
        model=model, inputs=[folder], output_dir=out, device="cpu", threads=None,
        settle_seconds=0.0,
    )  # fmt: skip


def _timed(events: Any) -> dict[str, Any]:
    """Consume a run's events: set-up and wall times, CPU time, the final record."""
    from zoodesk.batch.events import RunFinished, RunStarted

    t0 = time.perf_counter()
    start = start_epoch = cpu0 = None
    record = None
    for event in events:
        if isinstance(event, RunStarted):
            start, start_epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
        elif isinstance(event, RunFinished):
            record = event.record
    end, end_epoch, cpu1 = time.perf_counter(), time.time(), time.process_time()
    assert record is not None and start is not None and cpu0 is not None
    bad = [f.error for f in record.files if f.status != "ok"]
    assert not bad, bad[:3]
    return {
        "setup_s": start - t0,
        "wall_s": end - start,
        "start_epoch": start_epoch,
        "end_epoch": end_epoch,
        "cpu_s": cpu1 - cpu0,
        "record": record,
    }


def _files(record: Any) -> dict[str, Any]:
    files = record.files
    busy = [(f.read_seconds or 0) + (f.seconds or 0) + (f.write_seconds or 0) for f in files]
    stamped = [
        (datetime.fromisoformat(f.finished) - datetime.fromisoformat(f.started)).total_seconds()
        for f in files
    ]
    return {
        "files": len(files),
        "busy_s": sum(busy),
        "busy_timestamps_s": sum(stamped),
        "read_s": sum(f.read_seconds or 0 for f in files),
        "predict_s": sum(f.seconds or 0 for f in files),
        "inference_s": sum(f.inference_seconds or 0 for f in files),
        "write_s": sum(f.write_seconds or 0 for f in files),
        "mean_inference_s": statistics.fmean(f.inference_seconds or 0 for f in files),
        "mean_busy_s": statistics.fmean(busy),
        "blocks": sum((f.tiling or {}).get("blocks", 0) for f in files),
        "busy_by_key": {f.key: b for f, b in zip(files, busy, strict=True)},
    }


def bench_local(model: Path, folder: Path, out: Path) -> dict[str, Any]:
    from zoodesk.batch.runner import run_prediction

    timed = _timed(run_prediction(_request(model, folder, out)))
    record = timed.pop("record")
    figures = _files(record)
    figures.pop("busy_by_key")
    wall = timed["wall_s"]
    return {
        "config": "in-process",
        "workers": None,
        "threads": "all",
        **{k: v for k, v in timed.items() if not k.endswith("_epoch")},
        "throughput": figures["files"] / wall,
        **figures,
    }


def _task_stream(
    data: list[dict[str, Any]], run_id: str
) -> dict[str, list[tuple[float, float, str]]]:
    """Each worker's compute intervals of this run's tasks, in order: (start, stop, key)."""
    prefix = f"zoodesk-{run_id}-"
    per_worker: dict[str, list[tuple[float, float, str]]] = {}
    for task in data:
        if not str(task.get("key", "")).startswith(prefix):
            continue
        for ss in task.get("startstops", ()):
            if ss.get("action") == "compute":
                per_worker.setdefault(task["worker"], []).append(
                    (ss["start"], ss["stop"], str(task["key"]))
                )
    return {w: sorted(v) for w, v in per_worker.items()}


def bench_cluster(model: Path, folder: Path, out: Path, workers: int) -> dict[str, Any]:
    from distributed import get_task_stream

    from zoodesk.cluster.address import ClusterAddress
    from zoodesk.cluster.execute import connect, run_on_cluster

    t0 = time.perf_counter()
    with connect(ClusterAddress(workers=workers)) as client:
        startup = time.perf_counter() - t0
        # This process's CPU time while the cluster idles: heartbeats, the nannies'
        # monitors, the scheduler's periodic work; what is left of the run's CPU
        # time is the tasks'.
        cpu0 = time.process_time()
        time.sleep(IDLE_SECONDS)
        background = (time.process_time() - cpu0) / IDLE_SECONDS
        with get_task_stream(client) as stream:
            timed = _timed(run_on_cluster(_request(model, folder, out), client))
        t_close = time.perf_counter()
    shutdown = time.perf_counter() - t_close
    record = timed.pop("record")
    figures = _files(record)
    busy_by_key = figures.pop("busy_by_key")
    n, wall = figures["files"], timed["wall_s"]

    # Account for every worker-second of the run with the task stream.
    key_of = {f"zoodesk-{record.run_id}-{i}": f.key for i, f in enumerate(record.files)}
    tasks = _task_stream(stream.data, record.run_id)
    compute = in_task = in_task_first = gaps = start_idle = tail_idle = 0.0
    seen = 0
    for intervals in tasks.values():
        start_idle += intervals[0][0] - timed["start_epoch"]
        tail_idle += timed["end_epoch"] - intervals[-1][1]
        for k, (begin, end, key) in enumerate(intervals):
            extra = (end - begin) - busy_by_key[key_of[key]]
            compute += end - begin
            if k == 0:
                in_task_first += extra
            else:
                in_task += extra
                gaps += begin - intervals[k - 1][1]
            seen += 1
    counted = {w: len(v) for w, v in tasks.items()}
    addresses = {str((f.worker or {}).get("address")) for f in record.files}
    busy = figures["busy_s"]
    overhead = (workers * wall - busy) / n
    steady = (gaps + in_task) / max(1, n - len(tasks))
    return {
        "config": f"local:{workers}",
        "workers": workers,
        "threads": max(1, (os.cpu_count() or 1) // workers),
        "startup_s": startup,
        "shutdown_s": shutdown,
        **{k: v for k, v in timed.items() if not k.endswith("_epoch")},
        "throughput": n / wall,
        **figures,
        "workers_used": len(addresses),
        "tasks_per_worker": counted,
        "task_stream_tasks": seen,
        "compute_s": compute,
        "overhead_per_task_s": overhead,
        "overhead_vs_inference": overhead / figures["mean_inference_s"],
        "steady_overhead_per_task_s": steady,
        "steady_overhead_vs_inference": steady / figures["mean_inference_s"],
        "busy_fraction": busy / (workers * wall),
        # The parts of workers x wall - busy, summed over the workers (seconds).
        "accounting": {
            "in_task_first_s": in_task_first,
            "in_task_rest_s": in_task,
            "between_tasks_s": gaps,
            "start_idle_s": start_idle,
            "tail_idle_s": tail_idle,
            "unaccounted_s": workers * wall
            - busy
            - (in_task_first + in_task + gaps + start_idle + tail_idle),
        },
        "client_cpu_per_task_s": timed["cpu_s"] / n,
        "client_background_cpu": background,
        "client_task_cpu_s": max(0.0, timed["cpu_s"] - background * wall) / n,
    }


def scaling(run: dict[str, Any]) -> dict[str, Any]:
    """The simple model of the module docstring, from one cluster run."""
    b = run["mean_busy_s"]
    o = run["steady_overhead_per_task_s"]
    c = run["client_task_cpu_s"]
    r = run["client_background_cpu"]
    per_worker = 1 / (b + o)
    limit = (1 - r) / c if c > 0 else float("inf")
    return {
        "from": run["config"],
        "busy_per_file_s": b,
        "steady_overhead_s": o,
        "client_task_cpu_s": c,
        "client_background_cpu": r,
        "observed_wall_per_task_s": run["wall_s"] / run["files"],
        "per_worker_files_per_s": per_worker,
        "client_limit_files_per_s": limit,
        "workers_at_limit": limit / per_worker,
        "estimate": {w: min(w * per_worker, limit) for w in SCALE},
    }


def _row(run: dict[str, Any]) -> str:
    """One line of the table; the cluster figures are dashes for the in-process run."""

    def cell(key: str, width: int, form: str, scale: float = 1.0, unit: str = "") -> str:
        if run["workers"] is None:
            return f"{'-':>{width}}"
        return f"{run[key] * scale:>{width - len(unit)}{form}}{unit}"

    return (
        f"  {run['config']:<11} {run['threads'] or '-':>3} {cell('startup_s', 8, '.1f', unit='s')} "
        f"{run['wall_s']:>6.1f}s {run['throughput']:>7.2f} {run['mean_busy_s'] * 1000:>7.0f}ms "
        f"{run['mean_inference_s'] * 1000:>8.0f}ms "
        f"{cell('overhead_per_task_s', 9, '.1f', 1000, 'ms')} "
        f"{cell('overhead_vs_inference', 7, '.1%')} "
        f"{cell('steady_overhead_per_task_s', 8, '.1f', 1000, 'ms')} "
        f"{cell('steady_overhead_vs_inference', 6, '.1%')} {cell('busy_fraction', 6, '.1%')} "
        f"{cell('client_task_cpu_s', 9, '.1f', 1000, 'ms')}"
    )


def print_table(results: dict[str, Any]) -> None:
    runs = results["best"]
    print(
        f"{results['files']} files of {results['size']}x{results['size']} uint16, "
        f"{Path(results['model']).name}, CPU, {results['cpus']} cores, best of "
        f"{results['rounds']} round(s):"
    )
    head = (
        f"  {'run':<11} {'thr':>3} {'start-up':>8} {'wall':>7} {'files/s':>7} {'busy/file':>9} "
        f"{'infer/file':>10} {'ovh/task':>9} {'ovh/inf':>7} {'steady':>8} {'st/inf':>6} "
        f"{'busy%':>6} {'task CPU':>9}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for run in runs.values():
        print(_row(run))
    print(
        "  wall: RunStarted to RunFinished; start-up: the LocalCluster's (the run's own set-up\n"
        "  before RunStarted and the shutdown are in the JSON); thr: ONNX Runtime threads per\n"
        "  session; busy/file: the record's read + prediction + write seconds; infer/file:\n"
        "  inference_seconds; ovh/task: (workers x wall - sum busy) / files, ovh/inf: that over\n"
        f"  infer/file (target < {TARGET:.0%}); steady: without the fixed costs (model loads,\n"
        "  start, tail), st/inf: over infer/file; busy%: sum busy / (workers x wall);\n"
        "  task CPU: this process's CPU time (client, scheduler, nannies) per task, less its\n"
        "  background while the cluster idles."
    )
    for run in runs.values():
        if run["workers"] is None:
            continue
        a = run["accounting"]
        idle = run["workers"] * run["wall_s"] - run["busy_s"]
        print(
            f"  {run['config']}: workers x wall - busy = {idle:.2f} s"
            f" = model load + 1st task extra {a['in_task_first_s']:.2f} + in-task extra "
            f"{a['in_task_rest_s']:.2f} + between tasks {a['between_tasks_s']:.2f} + start "
            f"{a['start_idle_s']:.2f} + tail {a['tail_idle_s']:.2f} (+ {a['unaccounted_s']:.2f})"
        )
    scale = results.get("scaling")
    if scale:
        b, o = scale["busy_per_file_s"], scale["steady_overhead_s"]
        c, r = scale["client_task_cpu_s"], scale["client_background_cpu"]
        print(
            f"Larger cluster (estimate from {scale['from']}, one core per worker): "
            f"min(w / (b + o), (1 - r) / c)\n"
            f"  b = {b * 1000:.0f} ms busy per file, o = {o * 1000:.1f} ms steady overhead per "
            f"task, c = {c * 1000:.1f} ms client task CPU, r = {r:.1%} client background CPU:\n"
            f"  client limit {scale['client_limit_files_per_s']:.0f} files/s, reached at about "
            f"{scale['workers_at_limit']:.0f} workers"
        )
        print(
            "  " + "  ".join(f"w={w}: {v:.1f}" for w, v in scale["estimate"].items()) + " files/s"
        )
        print(
            f"  (observed wall / files at {scale['from']}: "
            f"{scale['observed_wall_per_task_s'] * 1000:.0f} ms, set by the workers, not the "
            "client; assumes storage keeps up and fixed costs are amortised)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", default="1,2", help="comma-separated local:N to run")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds, best counts")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "cluster.json")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]

    results: dict[str, Any] = {
        "files": args.files,
        "size": args.size,
        "model": str(args.model),
        "cpus": os.cpu_count(),
        "workers": counts,
        "rounds": args.rounds,
        "target_overhead_vs_inference": TARGET,
    }
    rounds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.files, args.size, args.size)
        for r in range(args.rounds):
            print(f"round {r + 1}: in-process ...", flush=True)
            run = bench_local(args.model, folder, Path(tmp) / f"local-{r}")
            rounds.setdefault(run["config"], []).append(run)
            for w in counts:
                print(f"round {r + 1}: local:{w} ...", flush=True)
                run = bench_cluster(args.model, folder, Path(tmp) / f"cluster{w}-{r}", w)
                rounds.setdefault(run["config"], []).append(run)
    results["rounds_data"] = rounds
    results["best"] = {k: min(v, key=lambda run: run["wall_s"]) for k, v in rounds.items()}
    clustered = [run for run in results["best"].values() if run["workers"]]
    if clustered:
        results["scaling"] = scaling(max(clustered, key=lambda run: run["workers"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))

    print()
    print_table(results)
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
