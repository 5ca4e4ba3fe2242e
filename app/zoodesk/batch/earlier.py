"""An output folder that already holds a run: whose it is, and what a new run would do
to it.

A run into a folder holding an earlier run's record replaces that record.  Over the
same inputs and set-up that is a resume (finished inputs are skipped); over other
inputs the earlier inputs would drop out of the record with their outputs left
behind, and over another set-up the runner refuses.  :func:`find_earlier_run` tells a
front end which case it is before the run starts, so that it can ask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from zoodesk.batch.inputs import collect_inputs
from zoodesk.batch.record import RECORD_NAME, RunRecord
from zoodesk.batch.request import PredictionRequest, planned_signature, setup_differences
from zoodesk.errors import ZooDeskError
from zoodesk.instances.settings import check_against
from zoodesk.models.package import ModelPackage


@dataclass(frozen=True)
class EarlierRun:
    """The run recorded in an output folder, seen from a run about to start there.

    Attributes
    ----------
    record_path
        Its ``zoodesk-run.json``.
    model
        The name of the model it ran.
    started
        When it started (ISO 8601, UTC).
    done
        Its inputs with outputs (finished, or done by a run before it).
    left_out
        Those of them the new run does not process: their outputs would drop out of
        the record unless the new run adds to this one.
    differences
        What the new run would do differently (keys of the run signature: the
        model, weights, axes, channels, series, tile, padding, objects); empty when
        the new run's outputs are comparable with this run's.
    """

    record_path: Path
    model: str
    started: str
    done: int
    left_out: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()

    @property
    def same_inputs(self) -> bool:
        """True when the new run processes every input this run finished."""
        return not self.left_out

    @property
    def can_add(self) -> bool:
        """True when the new run can add its inputs to this run (one set-up)."""
        return not self.differences

    def needs_a_choice(self, *, overwrite: bool = False) -> bool:
        """True when starting the new run here would lose or mix something: inputs left
        out of the record, or (without ``overwrite``, which redoes every input) results
        of another set-up, which the runner refuses."""
        return bool(self.left_out) or (bool(self.differences) and not overwrite)


def find_earlier_run(request: PredictionRequest, package: ModelPackage) -> EarlierRun | None:
    """The run already in ``request.output_dir`` that finished inputs, if there is one.

    The inputs are listed as the runner lists them (files of the folders, patterns,
    recursion); an input counts as processed when one of its files is.  A record that
    cannot be read is not reported: the runner warns about it and redoes every input.
    """
    out_dir = Path(request.output_dir).expanduser().resolve()
    record_path = out_dir / RECORD_NAME
    if not record_path.is_file():
        return None
    try:
        old = RunRecord.load(record_path)
    except ZooDeskError:
        return None
    done = [f for f in old.files if f.status in ("ok", "skipped") and f.outputs]
    if not done:
        return None
    files, _missing = collect_inputs(
        request.inputs, request.patterns, request.recursive, lists=request.lists, exclude=out_dir
    )
    left_out = old.inputs_left_out({str(path) for path, _root in files})
    if request.instances is not None:
        # The runner records the objects' settings as checked against the model.
        request = replace(request, instances=check_against(package.spec, request.instances))
    differences = tuple(setup_differences(old, planned_signature(package, request)))
    return EarlierRun(
        record_path=record_path,
        model=str(old.model.get("name") or old.model.get("id") or "another model"),
        started=old.started,
        done=len(done),
        left_out=left_out,
        differences=differences,
    )


def fresh_folder(folder: Path) -> Path:
    """A sibling of ``folder`` that does not exist yet: ``NAME-2``, ``NAME-3``, …"""
    folder = Path(folder)
    n = 2
    while (candidate := folder.with_name(f"{folder.name}-{n}")).exists():
        n += 1
    return candidate
