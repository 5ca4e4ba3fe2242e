"""A prediction run whose inputs are tasks on a Dask cluster's workers.

:func:`run_on_cluster` sets the run up and keeps its record here exactly as
:func:`~zoodesk.batch.runner.run_prediction` does; :class:`ClusterExecutor` hands
each input to a worker (:func:`zoodesk.cluster.worker.run_input`) and records the
entry the worker returns, with the worker's address, host and device.

Faults
    A worker that dies (killed, out of memory, its machine lost) takes its running
    task with it; the scheduler reruns the task on another worker, and the entry's
    ``worker.lost_workers`` names the ones that died running it.  Outputs are only
    ever renamed into place when complete, so a dead worker leaves at most a
    temporary ``.part`` file, which the run deletes at its end.  A task that kills
    every worker it runs on (more than the scheduler's ``allowed-failures``, 3 by
    default) fails its input with a line saying so.  When this process dies, the
    record keeps what was finished; running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from distributed import Client, Event, Future, LocalCluster, as_completed
from distributed.client import FutureCancelledError

from zoodesk.batch.events import Event as RunEvent
from zoodesk.batch.events import FileFinished, FileStarted, RunWarning
from zoodesk.batch.outfolder import clean_leftovers
from zoodesk.batch.record import FileEntry, now_iso
from zoodesk.batch.request import PredictionRequest
from zoodesk.batch.runner import RunPlan, run_prediction
from zoodesk.cluster.address import ClusterAddress
from zoodesk.cluster.blocks import predict_by_blocks, wants_blocks
from zoodesk.cluster.worker import (
    PLUGIN_NAME,
    TOPIC,
    InputTask,
    ModelOnWorker,
    SessionCache,
    check_access,
    run_input,
    workers_per_host,
)
from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.inference.predict import Predictor
from zoodesk.models.package import ModelPackage

log = logging.getLogger(__name__)

#: Seconds to wait for a scheduler to answer before giving up.
CONNECT_TIMEOUT = 15.0
#: Seconds between looks at finished tasks, events and the cancel flag when none
#: has finished.
POLL_SECONDS = 0.05


@contextlib.contextmanager
def connect(cluster: ClusterAddress) -> Iterator[Client]:
    """A client of the cluster: ``local:N`` starts N worker processes on loopback for
    the duration; an address connects to a running scheduler."""
    if cluster.workers is not None:
        try:
            local = LocalCluster(
                n_workers=cluster.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # The scheduler's web server on a free port: another run's cluster
                # (or any program) may hold the default 8787.
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
        except Exception as exc:
            raise ZooDeskError(
                f"--cluster {cluster}: could not start {cluster.workers} local worker "
                f"processes ({_first_line(exc)})"
            ) from exc
        try:
            with Client(local) as client:
                yield client
        finally:
            local.close()
        return
    try:
        client = Client(cluster.address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ZooDeskError(
            f"--cluster {cluster}: cannot reach the Dask scheduler there ({_first_line(exc)})"
        ) from exc
    with client:
        if not client.scheduler_info().get("workers"):
            raise ZooDeskError(f"--cluster {cluster}: the scheduler has no workers")
        yield client


def _first_line(exc: BaseException) -> str:
    """An exception's message for a one-line report (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _has_plugin(dask_worker: Any) -> bool:
    return PLUGIN_NAME in dask_worker.plugins


def _ensure_plugin(client: Client) -> None:
    """Register the session cache unless every worker has it: registering again would
    replace it, and the workers would load their models again."""
    if not all(client.run(_has_plugin).values()):
        client.register_plugin(SessionCache())


def _workers(client: Client) -> dict[str, dict[str, Any]]:
    return dict(client.scheduler_info(n_workers=-1).get("workers", {}))


def check_workers_see(
    client: Client, package: ModelPackage, request: PredictionRequest, out_dir: Path
) -> None:
    """Refuse the run, naming the worker and the path, when a worker cannot reach the
    model, the output folder or the inputs named on the command line."""
    inputs = [str(Path(p).expanduser().resolve()) for p in [*request.inputs, *request.lists]]
    answers = client.run(check_access, str(package.description_path), str(out_dir), inputs)
    problems = [
        f"worker {worker} cannot reach {what}"
        for worker, missing in sorted(answers.items())
        for what in missing
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ZooDeskError(
            "; ".join(problems[:3]) + more + ": the workers must see the model, the inputs "
            "and the output folder at the same paths as this computer (shared storage)"
        )


def run_on_cluster(
    request: PredictionRequest,
    client: Client,
    *,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[RunEvent]:
    """:func:`~zoodesk.batch.runner.run_prediction` with the inputs processed by the
    cluster's workers; the same events, record, resume and errors."""
    from zoodesk.models import resolve_model

    package = (
        request.model
        if isinstance(request.model, ModelPackage)
        else resolve_model(str(request.model))
    )
    out_dir = Path(request.output_dir).expanduser().resolve()
    check_workers_see(client, package, request, out_dir)
    # The model is loaded here only to check it and choose its weights (workers load
    # their own copy on their own device): on the CPU, one thread.
    predictor = Predictor(
        package,
        device="cpu",
        threads=1,
        weights_format=request.weights_format,
        tile=request.tile,
        pad_mode=request.pad_mode,
    )
    executor = ClusterExecutor(client, package)
    yield from run_prediction(
        replace(request, model=package),
        cancelled=cancelled,
        predictor=predictor,
        execute=executor,
    )


@dataclass
class _Tracking:
    """What the client knows of one submitted input."""

    index: int
    future: Future
    started_on: list[str] = field(default_factory=list)
    finished: bool = False


class ClusterExecutor:
    """Processes a run plan's inputs as tasks on the client's cluster."""

    def __init__(self, client: Client, package: ModelPackage) -> None:
        self.client = client
        self.package = package
        workers = _workers(client)
        hosts = len({info.get("host") for info in workers.values()})
        where = "this computer" if hosts <= 1 else f"{hosts} hosts"
        scheduler = client.scheduler_info().get("address", "")
        #: Shown when the run starts.
        self.description = f"the cluster {scheduler} ({len(workers)} workers on {where})"

    def __call__(
        self, plan: RunPlan, is_cancelled: Callable[[], bool]
    ) -> Generator[RunEvent, None, bool]:
        client = self.client
        request = plan.request
        record = plan.record
        _ensure_plugin(client)
        workers = _workers(client)
        model = ModelOnWorker(
            description=str(self.package.description_path),
            description_sha256=sha256_file(self.package.description_path),
            device=request.device,
            threads=request.threads,
            weights_format=plan.predictor.weights.format,
            tile=tuple(sorted(request.tile.items())) if request.tile else None,
            pad_mode=request.pad_mode,
        )
        # Workers get the request without the input lists (they get their own input).
        for_workers = replace(
            request, model=str(self.package.description_path), inputs=(), lists=()
        )
        cancel = Event(f"zoodesk-cancel-{uuid.uuid4().hex}", client=client)
        # The run's own topic: other runs on the same cluster send their own events.
        topic = f"{TOPIC}-{record.run_id}"
        started: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        client.subscribe_topic(topic, lambda event: started.put(event[1]))
        tracking: dict[Any, _Tracking] = {}
        by_blocks = [i for i in plan.to_do if wants_blocks(plan, plan.entries[i])]
        spread = set(by_blocks)
        per_host = workers_per_host(client)
        for index in plan.to_do:
            if index in spread:
                continue
            entry = plan.entries[index]
            task = InputTask(
                model=model,
                request=for_workers,
                run_id=record.run_id,
                software=dict(record.software),
                out_dir=str(plan.out_dir),
                entry=entry,
                index=index,
                cancel_event=cancel.name,
                topic=topic,
                workers_per_host=per_host,
            )
            future = client.submit(
                run_input, task, key=f"zoodesk-{record.run_id}-{index}", pure=False
            )
            tracking[future.key] = _Tracking(index, future)
        by_index = {t.index: t for t in tracking.values()}
        pending = {t.future for t in tracking.values()}
        cancelled_run = False
        lost: set[str] = set()
        try:
            for index in by_blocks:
                if cancelled_run or is_cancelled():
                    cancelled_run = True
                    break
                entry = plan.entries[index]
                yield FileStarted(plan.offset + index, Path(entry.input), entry.scene)
                entry.started = now_iso()
                cancelled_run = yield from predict_by_blocks(
                    client, plan, index, model, is_cancelled
                )
                entry.finished = now_iso()
                problem = plan.keeper.save()
                if problem is not None:
                    yield problem
                yield FileFinished(plan.offset + index, Path(entry.input), entry)
            if cancelled_run:
                cancel.set()
                client.cancel(list(pending))
                pending.clear()
            finishing = as_completed(list(pending))
            while pending:
                if not cancelled_run and is_cancelled():
                    cancelled_run = True
                    cancel.set()
                    # Inputs not started stay "not done", as in a local run; the
                    # running ones see the flag between blocks and stop.
                    not_started = [
                        t.future
                        for t in tracking.values()
                        if not t.started_on and t.future in pending
                    ]
                    client.cancel(not_started)
                    pending.difference_update(not_started)
                    continue
                yield from self._drain_started(plan, started, by_index)
                # A batch of finished tasks, without waiting on every pending one (a
                # run's cost per task stays the same however many inputs it has).
                done = finishing.next_batch(block=False)
                if not done:
                    time.sleep(POLL_SECONDS)
                    continue
                yield from self._drain_started(plan, started, by_index)
                for future in done:
                    if future not in pending:
                        continue  # cancelled before it started
                    pending.discard(future)
                    track = tracking[future.key]
                    track.finished = True
                    if not track.started_on:
                        # Its start was not heard of yet: say it before its end.
                        entry = plan.entries[track.index]
                        yield FileStarted(plan.offset + track.index, Path(entry.input), entry.scene)
                    entry = self._settle(plan, track, future)
                    lost.update((entry.worker or {}).get("lost_workers", []))
                    problem = plan.keeper.save()
                    if problem is not None:
                        yield problem
                    yield FileFinished(plan.offset + track.index, Path(entry.input), entry)
        except GeneratorExit:
            cancel.set()
            client.cancel(list(pending))
            raise
        except KeyboardInterrupt:
            # A second Ctrl-C: stop at once, but leave a consistent record behind
            # (inputs still running are "not done"; a rerun redoes them).
            cancel.set()
            client.cancel(list(pending))
            cancelled_run = True
        finally:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
        if lost:
            yield RunWarning(
                f"worker(s) {', '.join(sorted(lost))} died during the run; their inputs were "
                "run again on other workers (see each input's worker entry in the record)"
            )
        self._describe_devices(plan, workers)
        # Temporary files of workers that died while writing.
        clean_leftovers(plan.out_dir, set(plan.planned))
        return cancelled_run

    def _drain_started(
        self,
        plan: RunPlan,
        started: queue.SimpleQueue[dict[str, Any]],
        by_index: dict[int, _Tracking],
    ) -> Iterator[RunEvent]:
        while True:
            try:
                event = started.get_nowait()
            except queue.Empty:
                return
            track = by_index.get(int(event.get("index", -1)))
            if track is None or track.finished or event.get("event") != "started":
                continue
            first = not track.started_on
            track.started_on.append(str(event.get("worker")))
            if first:
                entry = plan.entries[track.index]
                yield FileStarted(plan.offset + track.index, Path(entry.input), entry.scene)

    def _settle(self, plan: RunPlan, track: _Tracking, future: Future) -> FileEntry:
        entry = plan.entries[track.index]
        try:
            result = future.result()
        except FutureCancelledError:
            entry.status = "not done"
            entry.error = "cancelled"
            return entry
        except Exception as exc:  # the task could not run: a worker-side error
            name = type(exc).__name__
            if name == "KilledWorker":
                entry.error = (
                    f"{entry.input}: every worker that ran it died ({len(track.started_on)} "
                    "tries; out of memory?)"
                )
            else:
                first = _first_line(exc)
                entry.error = first if str(entry.input) in first else f"{entry.input}: {first}"
            entry.status = "failed"
            entry.worker = {"lost_workers": sorted(set(track.started_on))}
            return entry
        # The worker's entry replaces ours (in place: the record lists the same
        # objects); add who died running it before.
        worker = dict(result.worker or {})
        lost = sorted({w for w in track.started_on if w != worker.get("address")})
        if lost:
            worker["lost_workers"] = lost
        result.worker = worker
        for name in (f.name for f in fields(FileEntry)):
            setattr(entry, name, getattr(result, name))
        return entry

    def _describe_devices(self, plan: RunPlan, workers: dict[str, dict[str, Any]]) -> None:
        used = sorted(
            {
                (e.worker["device"], e.worker.get("device_description", ""))
                for e in plan.entries
                if e.worker and "device" in e.worker
            }
        )
        device = plan.record.device
        device["cluster"] = {
            "scheduler": self.client.scheduler_info().get("address"),
            "workers": {
                address: {"host": info.get("host"), "nthreads": info.get("nthreads")}
                for address, info in sorted(workers.items())
            },
        }
        if used:
            device["used"] = ", ".join(sorted({name for name, _ in used}))
            device["description"] = "; ".join(sorted({d for _, d in used if d}))
            device["provider"] = None
