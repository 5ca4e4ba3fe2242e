"""Where every file of a run goes in the package, decided before anything is written.

:func:`plan_export` reads the run record and assigns each input and output its
package path (``images/``, ``annotations/<output_id>/``, ``processed/<output_id>/``),
with safe, unique names.  Every other part of the export (file lists, crate,
metadata) works from this plan, so they all name the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from zoodesk.batch.record import FileEntry, OutputEntry, RunRecord
from zoodesk.export.naming import UniqueNames, safe_name, safe_relative_path, split_suffix

InputMode = Literal["include", "reference"]

#: Suffix of the metadata-only OME-XML file that stands for a referenced input.
COMPANION_SUFFIX = ".companion.ome"

#: Output kinds that are annotations (MIFA); the rest are processed images.
ANNOTATION_KINDS = ("labels", "probabilities")

# Statuses of inputs whose outputs exist and are exported.
_DONE = ("ok", "skipped")


@dataclass
class PlannedOutput:
    """One output file of the run and its place in the package."""

    entry: OutputEntry
    source: Path
    package_path: str
    group: Literal["annotations", "processed"]

    @property
    def tensor(self) -> str:
        return self.entry.tensor

    @property
    def kind(self) -> str:
        return self.entry.kind


@dataclass
class PlannedInput:
    """One input of the run: its fate, and what stands for it in the package.

    ``package_path`` is the copy under ``images/`` (include mode) or the OME-XML
    companion under ``images/`` (reference mode) for inputs with results; None for
    inputs that failed or were not processed (they are described in the provenance
    only).  ``crate_id`` is the RO-Crate ``@id`` of the input file itself.
    """

    number: int
    entry: FileEntry
    source: Path
    package_path: str | None
    crate_id: str
    included: bool
    outputs: list[PlannedOutput] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Whether the run produced this input's outputs."""
        return self.entry.status in _DONE

    @property
    def name(self) -> str:
        return self.source.name


@dataclass
class ExportPlan:
    """The run, the chosen input mode, and every file's package path."""

    record: RunRecord
    run_dir: Path
    mode: InputMode
    inputs: list[PlannedInput]
    output_ids: list[str]

    @property
    def outputs(self) -> list[PlannedOutput]:
        return [o for i in self.inputs for o in i.outputs]

    @property
    def done(self) -> list[PlannedInput]:
        return [i for i in self.inputs if i.done]

    @property
    def not_done(self) -> list[PlannedInput]:
        return [i for i in self.inputs if not i.done]

    def outputs_of(self, output_id: str) -> list[PlannedOutput]:
        return [o for o in self.outputs if o.tensor == output_id]

    def group_of(self, output_id: str) -> Literal["annotations", "processed"]:
        """``annotations`` for labels and probabilities, ``processed`` for images."""
        kinds = {o.kind for o in self.outputs_of(output_id)}
        return "processed" if kinds and kinds <= {"image"} else "annotations"

    def kind_of(self, output_id: str) -> str:
        kinds = sorted({o.kind for o in self.outputs_of(output_id)})
        return kinds[0] if kinds else "probabilities"

    def file_list_of(self, output_id: str) -> str:
        """The BioStudies file list that lists this output's files."""
        prefix = "annotations" if self.group_of(output_id) == "annotations" else "processed"
        return f"filelists/{prefix}_{safe_name(output_id)}.tsv"

    def input_of(self, output: PlannedOutput) -> PlannedInput:
        return next(i for i in self.inputs if output in i.outputs)


def _input_parts(entry: FileEntry, source: Path) -> list[str]:
    # The run's key keeps the sub-folders below the input folder (recursive runs);
    # the file keeps its own name so that the deposit shows what was acquired.
    key_parts = PurePosixPath(entry.key).parts[:-1] if entry.key else ()
    return [*key_parts, source.name]


def plan_export(record: RunRecord, run_dir: Path, mode: InputMode = "include") -> ExportPlan:
    """Assign package paths to every input and output of ``record``.

    Parameters
    ----------
    record
        The run record (``zoodesk-run.json``) of ``run_dir``.
    run_dir
        The folder the record's output paths are relative to.
    mode
        ``include``: inputs with results are copied into ``images/``;
        ``reference``: they are not copied, and a metadata-only OME-XML companion
        under ``images/`` stands for each of them.

    Returns
    -------
    ExportPlan
        Inputs in record order, numbered from 1.
    """
    names = UniqueNames()
    output_order = [o["id"] for o in record.model.get("outputs", [])]
    inputs: list[PlannedInput] = []
    # The scenes of one multi-scene file are inputs of their own: one copy serves all.
    copied: dict[str, str] = {}
    for number, entry in enumerate(record.files, start=1):
        source = Path(entry.input)
        done = entry.status in _DONE
        package_path: str | None = None
        included = False
        if done:
            rel = safe_relative_path(_input_parts(entry, source))
            if mode == "include":
                package_path = copied.get(entry.input) or names.claim(f"images/{rel}")
                copied[entry.input] = package_path
                included = True
            else:
                stem = split_suffix(rel.rsplit("/", 1)[-1])[0]
                folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
                package_path = names.claim(f"images/{folder}{stem}{COMPANION_SUFFIX}")
        crate_id = (
            package_path
            if included and package_path
            else (f"#input-{number}-{safe_name(source.name, 'input')}")
        )
        planned = PlannedInput(number, entry, source, package_path, crate_id, included)
        if done:
            for out in entry.outputs:
                group: Literal["annotations", "processed"] = (
                    "annotations" if out.kind in ANNOTATION_KINDS else "processed"
                )
                rel_out = safe_relative_path(PurePosixPath(out.path).parts)
                path = names.claim(f"{group}/{safe_name(out.tensor)}/{rel_out}")
                planned.outputs.append(PlannedOutput(out, run_dir / out.path, path, group))
        inputs.append(planned)
    seen = {o.tensor for i in inputs for o in i.outputs}
    output_ids = [t for t in output_order if t in seen] + sorted(seen - set(output_order))
    return ExportPlan(record, run_dir, mode, inputs, output_ids)
