"""What runs on a cluster's workers: one task per input, one session per model and device.

Everything here is called by Dask on a worker process (pickled by reference, so the
workers need ZooDesk installed, the same version as the client).  Models, inputs and
the output folder are read and written by path: they must be on storage the workers
share with the client.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Event, WorkerPlugin, get_worker

from zoodesk.batch.outfolder import probe_writable
from zoodesk.batch.record import FileEntry, RunRecord
from zoodesk.batch.request import PredictionRequest
from zoodesk.batch.steps import process_input
from zoodesk.errors import ZooDeskError
from zoodesk.fileutils import sha256_file
from zoodesk.inference.predict import Predictor

#: Name of the worker plugin that keeps the loaded models.
PLUGIN_NAME = "zoodesk-sessions"
#: Prefix of the topics of the events tasks send to the client (``started``).
TOPIC = "zoodesk"
#: Least seconds between two looks at the run's cancel flag (each asks the scheduler).
CANCEL_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class ModelOnWorker:
    """What identifies a loaded model on a worker: its package, checksum and settings."""

    description: str
    description_sha256: str
    device: str = "auto"
    threads: int | None = None
    weights_format: str | None = None
    tile: tuple[tuple[str, int], ...] | None = None
    pad_mode: str = "reflect"


class SessionCache(WorkerPlugin):
    """Keeps one :class:`Predictor` (ONNX Runtime session) per model and device for the
    worker's lifetime, so that a model is loaded once per worker, not once per input."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self._predictors: dict[ModelOnWorker, Predictor] = {}
        self._lock = threading.Lock()

    def setup(self, worker: Any) -> None:
        self._predictors = {}
        self._lock = threading.Lock()

    def teardown(self, worker: Any) -> None:
        self._predictors.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Sent to workers empty: sessions are made there.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def predictor(self, model: ModelOnWorker, threads: int | None) -> Predictor:
        """The worker's predictor for ``model``, loaded on first use."""
        with self._lock:
            found = self._predictors.get(model)
            if found is None:
                if model.device != "cpu":
                    with contextlib.suppress(ValueError):
                        _choose_gpu(get_worker())
                found = _load(model, threads)
                self._predictors[model] = found
            return found


_FALLBACK = SessionCache()


def _load(model: ModelOnWorker, threads: int | None) -> Predictor:
    from zoodesk.models.package import load_model_package

    where = worker_name()
    path = Path(model.description)
    if not path.exists():
        raise ZooDeskError(
            f"worker {where} cannot see the model package {path}: put the model on storage "
            "the workers share (the same path on every machine)"
        )
    if sha256_file(path) != model.description_sha256:
        raise ZooDeskError(
            f"worker {where}: the model at {path} is not the one this run uses (its "
            "description differs); the workers must see the same files as this computer"
        )
    package = load_model_package(path)
    return Predictor(
        package,
        device=model.device,
        threads=model.threads if model.threads is not None else threads,
        weights_format=model.weights_format,
        tile=dict(model.tile) if model.tile else None,
        pad_mode=model.pad_mode,
    )


def worker_name() -> str:
    """The worker's address and host, for messages (this process's host off a worker)."""
    try:
        worker = get_worker()
    except ValueError:
        return socket.gethostname()
    return f"{worker.address} ({socket.gethostname()})"


@dataclass
class InputTask:
    """One input for a worker: the run's settings and the input's record entry."""

    model: ModelOnWorker
    request: PredictionRequest
    run_id: str
    software: dict[str, str]
    out_dir: str
    entry: FileEntry
    index: int
    #: Name of the run's :class:`distributed.Event` that says "cancel".
    cancel_event: str
    #: Where the task tells the client it started (the run's own topic).
    topic: str = TOPIC
    #: Worker processes per host: each worker's share of the host's cores when the
    #: run does not set ``threads``.
    workers_per_host: Mapping[str, int] = field(default_factory=dict)


def address_host(address: str) -> str:
    """The host part of a worker's address (``tcp://10.0.0.2:40000`` -> ``10.0.0.2``)."""
    return address.split("://")[-1].rsplit(":", 1)[0]


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM job's, a cgroup's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def workers_per_host(client: Any) -> dict[str, int]:
    """How many workers each host runs, keyed as workers see themselves (the host
    part of their address)."""
    counts: dict[str, int] = {}
    for address in client.scheduler_info(n_workers=-1).get("workers", {}):
        host = address_host(address)
        counts[host] = counts.get(host, 0) + 1
    return counts


def cores_for(workers_per_host: Mapping[str, int]) -> int | None:
    """This worker's share of its host's cores (None off a worker)."""
    try:
        host = address_host(get_worker().address)
    except ValueError:
        return None
    sharing = workers_per_host.get(host, 1)
    return max(1, usable_cores() // max(1, sharing))


def _cancel_check(name: str) -> Callable[[], bool]:
    event = Event(name)
    # The first look comes after CANCEL_CHECK_SECONDS: most inputs take less, and
    # each look asks the scheduler.
    last = time.monotonic()
    seen = False

    def cancelled() -> bool:
        nonlocal last, seen
        now = time.monotonic()
        if not seen and now - last >= CANCEL_CHECK_SECONDS:
            last = now
            seen = event.is_set()
        return seen

    return cancelled


def gpu_for_worker(rank: int, gpus: int) -> int | None:
    """The GPU a worker takes: workers on one computer share its GPUs in turn (the
    ``rank``-th worker there takes GPU ``rank mod gpus``); None without GPUs."""
    return rank % gpus if gpus > 0 else None


def _choose_gpu(worker: Any) -> None:
    """Give this worker its own GPU where its computer has several, as
    ``ZOODESK_GPU_DEVICE`` (unless set already, e.g. by dask-cuda's
    ``CUDA_VISIBLE_DEVICES`` or by hand)."""
    from zoodesk.inference.providers import GPU_DEVICE_VARIABLE, cuda_device_count

    if GPU_DEVICE_VARIABLE in os.environ or "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    gpus = cuda_device_count()
    if gpus < 2:
        return
    host = address_host(worker.address)
    try:
        peers = sorted(
            address
            for address in worker.client.scheduler_info(n_workers=-1)["workers"]
            if address_host(address) == host
        )
        rank = peers.index(worker.address)
    except (ValueError, KeyError, OSError):
        return
    chosen = gpu_for_worker(rank, gpus)
    if chosen is not None:
        os.environ[GPU_DEVICE_VARIABLE] = str(chosen)


def run_input(task: InputTask) -> FileEntry:
    """Process one input on this worker and return its record entry, with where it ran."""
    worker = get_worker()
    worker.log_event(
        task.topic, {"event": "started", "index": task.index, "worker": worker.address}
    )
    entry = task.entry
    cache = worker.plugins.get(PLUGIN_NAME, _FALLBACK)
    assert isinstance(cache, SessionCache)
    predictor = cache.predictor(task.model, cores_for(task.workers_per_host))
    entry.worker = {
        "address": worker.address,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": predictor.session.device.name,
        "device_description": predictor.session.device.description,
    }
    if predictor.session.device.is_gpu:
        options = predictor.session.setup.provider_options
        entry.worker["device_id"] = str(options.get("device_id", "0"))
    # Only the run id and software versions are read (for provenance); given here,
    # the record does not look its software versions up again.
    record = RunRecord(
        path=Path(task.out_dir) / ".unused", run_id=task.run_id, software=dict(task.software)
    )
    input_tensor = next(t for t in predictor.spec.inputs if not t.optional)
    result = process_input(
        task.request,
        predictor,
        record,
        entry,
        Path(task.out_dir),
        input_tensor,
        _cancel_check(task.cancel_event),
    )
    if result.status == "failed" and result.error and not Path(entry.input).exists():
        result.error = f"{result.error} (on worker {worker_name()})"
    return result


def check_access(model: str, out_dir: str, inputs: Sequence[str]) -> list[str]:
    """What this worker cannot reach of a run: the model, the output folder, the inputs.

    Returns one line per problem (empty when all is reachable).  The output folder is
    checked by creating and deleting a probe file in it (or in its nearest existing
    parent, when the run has not created it yet).
    """
    problems = []
    if not Path(model).exists():
        problems.append(f"the model package {model}")
    folder = Path(out_dir)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        # Workers on different machines may share a process id: a random tag.
        probe_writable(folder, uuid.uuid4().hex)
    except OSError as exc:
        problems.append(f"the output folder {out_dir} (cannot write in {folder}: {exc.strerror})")
    problems.extend(f"the input {path}" for path in inputs if not Path(path).exists())
    return problems
