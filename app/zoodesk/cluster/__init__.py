"""Runs on a Dask cluster: the same run, record, resume and provenance as in one process.

``zoodesk predict ... --cluster local:N`` starts N worker processes on this
computer; ``--cluster tcp://scheduler:8786`` hands the run to the workers of an
existing Dask scheduler (started by hand, over SSH, by dask-jobqueue on a SLURM or
PBS queue, or on Kubernetes).  Each input is one task; a worker keeps one ONNX
Runtime session per model and device for its lifetime and writes the outputs
straight into the output folder, which it reaches on shared storage, as a local run
does (temporary names, renamed when complete, checksums).  This process keeps the
run record.  Images too large for one worker are split into blocks with the
model's halo and spread over the workers (:mod:`zoodesk.cluster.blocks`).

Nothing here is imported unless a run asks for a cluster: Dask is not loaded at
start-up.  See ``docs/cluster.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from zoodesk.cluster.address import ClusterAddress, cluster_choice, parse_cluster

if TYPE_CHECKING:
    from zoodesk.batch.console import RunElsewhere
    from zoodesk.batch.events import Event
    from zoodesk.batch.request import PredictionRequest

__all__ = ["ClusterAddress", "cluster_choice", "parse_cluster", "run_elsewhere"]


def run_elsewhere(cluster: ClusterAddress) -> RunElsewhere:
    """A ``run`` for :func:`zoodesk.batch.console.execute` that connects to ``cluster``
    (starting it, for ``local:N``) and runs the request on its workers."""

    @contextlib.contextmanager
    def run(request: PredictionRequest, cancelled: Callable[[], bool]) -> Iterator[Iterator[Event]]:
        from zoodesk.cluster.execute import connect, run_on_cluster

        with connect(cluster) as client:
            yield run_on_cluster(request, client, cancelled=cancelled)

    return run
