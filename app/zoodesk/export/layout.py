"""Where every file of a run goes in the package, decided before anything is written.

:func:`plan_export` reads the run record and assigns each input and output its
package path (``images/``, ``annotations/<output_id>/``, ``processed/<output_id>/``,
and for runs that found objects ``annotations/instances/`` and ``measurements/``),
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

#: The kind of the label images of objects, and of their tables (the instance step's).
INSTANCE_LABELS = "instance-labels"
MEASUREMENTS = "measurements"

#: Output kinds that are annotations (MIFA); the rest are processed images (or tables).
ANNOTATION_KINDS = ("labels", "probabilities", INSTANCE_LABELS)

#: Package folder of the measurement tables, and the run's summary table in it.
MEASUREMENTS_FOLDER = "measurements"
SUMMARY_TABLE = f"{MEASUREMENTS_FOLDER}/summary.csv"

#: The run's summary table (``zoodesk.batch.objects.SUMMARY_NAME``).
RUN_SUMMARY_NAME = "summary.csv"

# Statuses of inputs whose outputs exist and are exported.
_DONE = ("ok", "skipped")


@dataclass
class InnerOutput:
    """An output that lies inside another one: an OME-Zarr store's label image.

    It is copied and listed with its store, never on its own; ``package_path`` is
    its place inside the store's copy.
    """

    entry: OutputEntry
    package_path: str


@dataclass
class PlannedOutput:
    """One output file (or OME-Zarr store) of the run and its place in the package.

    ``set_id`` names the annotation set the file belongs to (one file list, one
    annotation method): the model output's id, or the instance set's id for the
    label images of objects.  ``contains`` are the outputs inside a store.
    """

    entry: OutputEntry
    source: Path
    package_path: str
    group: Literal["annotations", "processed"]
    set_id: str = ""
    contains: list[InnerOutput] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.set_id:
            self.set_id = self.entry.tensor

    @property
    def tensor(self) -> str:
        return self.entry.tensor

    @property
    def kind(self) -> str:
        return self.entry.kind


@dataclass
class PlannedTable:
    """A table of measured objects: one image's (``objects``) or the run's (``summary``)."""

    kind: Literal["objects", "summary"]
    source: Path
    package_path: str
    #: The record's entry of an image's table (None for the summary, which has none).
    entry: OutputEntry | None = None
    #: The label image the objects were measured in: a file or a store's inner path.
    labels: str | None = None


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
    tables: list[PlannedTable] = field(default_factory=list)

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
    #: The id of the set of label images of objects (``instances``).
    instances_set: str = "instances"
    #: The run's ``summary.csv``, when the run measured objects.
    summary: PlannedTable | None = None

    @property
    def outputs(self) -> list[PlannedOutput]:
        return [o for i in self.inputs for o in i.outputs]

    @property
    def tables(self) -> list[PlannedTable]:
        """Every table of measurements: each image's, then the run's summary."""
        found = [t for i in self.inputs for t in i.tables]
        return found + ([self.summary] if self.summary is not None else [])

    @property
    def has_instances(self) -> bool:
        """Whether the run made objects (label images) for at least one exported image."""
        return bool(self.label_images())

    @property
    def done(self) -> list[PlannedInput]:
        return [i for i in self.inputs if i.done]

    @property
    def not_done(self) -> list[PlannedInput]:
        return [i for i in self.inputs if not i.done]

    def outputs_of(self, output_id: str) -> list[PlannedOutput]:
        """The files of one annotation set (a model output, or the instance set)."""
        return [o for o in self.outputs if o.set_id == output_id]

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

    def label_images(self) -> list[tuple[PlannedInput, str, PlannedOutput]]:
        """Every label image of objects: its input, package path, and the file holding it.

        The file is the label image itself (OME-TIFF), or the OME-Zarr store it lies in.
        """
        return [found for item in self.done for found in _label_paths(item)]


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
    # The objects' label images are a set of their own: a name no model output has.
    instances_set = next(
        s for s in ("instances", "object-instances", "instances-objects") if s not in output_order
    )
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
            _plan_outputs(planned, entry, run_dir, names, instances_set)
        inputs.append(planned)
    seen = {o.set_id for i in inputs for o in i.outputs}
    output_ids = [t for t in output_order if t in seen] + sorted(seen - set(output_order))
    summary = None
    if any(i.tables for i in inputs) and (run_dir / RUN_SUMMARY_NAME).is_file():
        summary = PlannedTable(
            "summary", run_dir / RUN_SUMMARY_NAME, names.claim(SUMMARY_TABLE), None, None
        )
    return ExportPlan(record, run_dir, mode, inputs, output_ids, instances_set, summary)


def _plan_outputs(
    planned: PlannedInput, entry: FileEntry, run_dir: Path, names: UniqueNames, instances: str
) -> None:
    """Package paths of one input's outputs, label images inside stores, and tables."""
    inner = [
        o
        for o in entry.outputs
        if any(o.path.startswith(f"{s.path}/") for s in entry.outputs if s is not o)
    ]
    tables = [o for o in entry.outputs if o.kind == MEASUREMENTS]
    apart = {id(o) for o in [*inner, *tables]}
    for out in entry.outputs:
        if id(out) in apart:
            continue
        group: Literal["annotations", "processed"] = (
            "annotations" if out.kind in ANNOTATION_KINDS else "processed"
        )
        set_id = instances if out.kind == INSTANCE_LABELS else out.tensor
        rel_out = safe_relative_path(PurePosixPath(out.path).parts)
        path = names.claim(f"{group}/{safe_name(set_id)}/{rel_out}")
        planned.outputs.append(PlannedOutput(out, run_dir / out.path, path, group, set_id))
    for out in inner:
        # Inside a store (an NGFF label image): copied with it, at the same place in it.
        store = next(p for p in planned.outputs if out.path.startswith(f"{p.entry.path}/"))
        rest = out.path[len(store.entry.path) :]
        store.contains.append(InnerOutput(out, store.package_path + rest))
    labels = [p for _, p, _ in _label_paths(planned)]
    for out in tables:
        rel_out = safe_relative_path(PurePosixPath(out.path).parts)
        path = names.claim(f"{MEASUREMENTS_FOLDER}/{rel_out}")
        planned.tables.append(
            PlannedTable("objects", run_dir / out.path, path, out, labels[0] if labels else None)
        )


def _label_paths(item: PlannedInput) -> list[tuple[PlannedInput, str, PlannedOutput]]:
    found: list[tuple[PlannedInput, str, PlannedOutput]] = []
    for out in item.outputs:
        if out.kind == INSTANCE_LABELS:
            found.append((item, out.package_path, out))
        found += [(item, inner.package_path, out) for inner in out.contains]
    return found
