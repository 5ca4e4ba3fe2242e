"""Tables of measured objects in the package: where they go, what their columns mean.

A run made with ``--instances`` writes one table per image (``K_objects.csv``, a row
per object) and one per run (``summary.csv``, a row per image).  The package copies
them into ``measurements/`` and describes every column (name, unit, meaning) from
the definitions the run measured with (:func:`zoodesk.instances.measure.object_columns`
and :func:`~zoodesk.instances.measure.summary_columns`, rebuilt from the record's
``spatial_axes`` and ``intensity_channels``):

- a schema document per distinct table layout, ``measurements/schemas/<name>.json``,
  in the W3C "CSV on the Web" vocabulary (``columns`` with ``name``, ``datatype``,
  ``dc:description`` and ``schema:unitText``);
- ``filelists/measurements.tsv``: every table, the image and label image it
  describes, its row count and its schema document;
- the crates: each table a ``File`` whose ``variableMeasured`` are ``PropertyValue``
  entities with ``unitText`` (see :mod:`zoodesk.export.crate`), and in the
  submission crate a dataset of tables with its image analysis method.

:func:`check_tables` verifies, in a written package, that every listed table is
there and that its header is exactly the columns its schema describes.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoodesk.export.annotations import instance_method_short
from zoodesk.export.filelists import MEASUREMENTS_LIST, read_tsv, tsv_text
from zoodesk.export.layout import ExportPlan, PlannedInput, PlannedTable
from zoodesk.export.naming import UniqueNames

SCHEMAS_FOLDER = "measurements/schemas"

#: Header of ``filelists/measurements.tsv``, in this order.
MEASUREMENT_COLUMNS = (
    "Files",
    "Table",
    "Source Image",
    "Label Image",
    "Rows",
    "Table Schema",
    "Measurement Method",
    "Run ID",
)

#: The vocabulary of the schema documents (W3C CSV on the Web).
CSVW_CONTEXT = "http://www.w3.org/ns/csvw"

# Column names whose values are whole numbers or text (the rest are real numbers).
_INTEGER = re.compile(r"label|frames?|count|bbox_(min|max)_[zyx]_px|(area|volume)_px")
_TEXT = frozenset({"image", "input", "scene"})

_TABLE_TEXT = {
    "objects": "one row per object of one image (label, frame, position, size, shape, "
    "intensities of the input channels)",
    "summary": "one row per image of the run (object count, mean and median size, mean "
    "intensities)",
}


@dataclass(frozen=True)
class Column:
    """One column of a table: its name in the header, unit, meaning and datatype."""

    name: str
    unit: str
    description: str
    datatype: str


@dataclass(frozen=True)
class TableSchema:
    """The columns of one table layout and the package path of its schema document."""

    kind: str
    path: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def crate_id(self) -> str:
        """Stem of the crate ids of its columns (``#objects-column-area_px``)."""
        return "#" + self.path.rsplit("/", 1)[-1].removesuffix(".json")

    def column_id(self, column: Column) -> str:
        return f"{self.crate_id}-column-{column.name}"

    def document(self) -> dict[str, Any]:
        """The schema as a CSV on the Web (CSVW) document, JSON-ready."""
        columns = []
        for column in self.columns:
            described: dict[str, Any] = {
                "name": column.name,
                "titles": column.name,
                "datatype": column.datatype,
                "dc:description": column.description,
            }
            if column.unit:
                described["schema:unitText"] = column.unit
            columns.append(described)
        document: dict[str, Any] = {
            "@context": CSVW_CONTEXT,
            "dc:title": f"{self.kind} table of ZooDesk",
            "dc:description": f"{_TABLE_TEXT.get(self.kind, self.kind)}; comma-separated, "
            "UTF-8, one header row; an empty cell is a value that is not known (a "
            "physical size of an image without pixel size)",
            "columns": columns,
        }
        if self.kind == "objects":
            document["primaryKey"] = ["frame", "label"]
        return document


def datatype_of(name: str) -> str:
    """The CSVW datatype of a column of ZooDesk's tables, from its name."""
    if name in _TEXT:
        return "string"
    return "integer" if _INTEGER.fullmatch(name) else "number"


def _columns(definitions: list[dict[str, str]]) -> list[Column]:
    return [
        Column(d["name"], d.get("unit", ""), d.get("description", ""), datatype_of(d["name"]))
        for d in definitions
    ]


def _found(item: PlannedInput) -> Mapping[str, Any]:
    found = item.entry.instances
    return found if isinstance(found, Mapping) and "error" not in found else {}


def object_table_columns(item: PlannedInput) -> list[Column]:
    """The columns of an image's objects table, as the run measured them."""
    from zoodesk.instances.measure import object_columns

    found = _found(item)
    spatial = str(found.get("spatial_axes") or "YX")
    channels = [str(c) for c in found.get("intensity_channels") or []]
    return _columns(object_columns(spatial, channels))


def summary_table_columns(plan: ExportPlan) -> list[Column]:
    """The columns of the run's summary table: those of every image, in order."""
    from zoodesk.instances.measure import summary_columns

    seen: dict[str, Column] = {}
    for item in plan.done:
        found = _found(item)
        if "summary" not in found:
            continue
        spatial = str(found.get("spatial_axes") or "YX")
        channels = [str(c) for c in found.get("intensity_channels") or []]
        for column in _columns(summary_columns(spatial, channels)):
            seen.setdefault(column.name, column)
    return list(seen.values())


def plan_schemas(plan: ExportPlan) -> dict[str, TableSchema]:
    """The schema of every table of the plan, by the table's package path.

    Tables with the same columns share one schema document.
    """
    names = UniqueNames()
    by_columns: dict[tuple[str, tuple[Column, ...]], TableSchema] = {}
    schemas: dict[str, TableSchema] = {}

    def schema(kind: str, columns: list[Column]) -> TableSchema:
        key = (kind, tuple(columns))
        if key not in by_columns:
            path = names.claim(f"{SCHEMAS_FOLDER}/{kind}.json")
            by_columns[key] = TableSchema(kind, path, tuple(columns))
        return by_columns[key]

    for item in plan.done:
        for table in item.tables:
            schemas[table.package_path] = schema("objects", object_table_columns(item))
    if plan.summary is not None:
        schemas[plan.summary.package_path] = schema("summary", summary_table_columns(plan))
    return schemas


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV table (empty for an empty file)."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def csv_rows(path: Path) -> int:
    """The number of data rows of a CSV table."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)


def header_problem(header: list[str], schema: TableSchema) -> str | None:
    """Why a table's header is not the columns its schema describes, or None."""
    if header == schema.names:
        return None
    extra = [n for n in header if n not in schema.names]
    missing = [n for n in schema.names if n not in header]
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"columns not in its schema: {', '.join(extra)}")
        if missing:
            parts.append(f"columns of its schema missing: {', '.join(missing)}")
        return "; ".join(parts)
    return "its columns are not in the order of its schema"


def measurement_method(plan: ExportPlan) -> str:
    """One line saying how the tables were made."""
    software = plan.record.software
    return (
        f"measured by ZooDesk {software.get('zoodesk', '?')} in the label images of objects "
        f"({instance_method_short(plan)}), from the model's output and the input's "
        "intensities; model-generated, not manually curated"
    )


def _table_rows(
    plan: ExportPlan, root: Path, schemas: Mapping[str, TableSchema]
) -> list[list[Any]]:
    method = measurement_method(plan)
    rows: list[list[Any]] = []
    for item in plan.done:
        for table in item.tables:
            rows.append(
                [
                    table.package_path,
                    "objects",
                    item.package_path or "",
                    table.labels or "",
                    csv_rows(root / table.package_path),
                    schemas[table.package_path].path,
                    method,
                    plan.record.run_id,
                ]
            )
    summary = plan.summary
    if summary is not None:
        rows.append(
            [
                summary.package_path,
                "summary",
                "",
                "",
                csv_rows(root / summary.package_path),
                schemas[summary.package_path].path,
                method,
                plan.record.run_id,
            ]
        )
    return rows


def write_tables_metadata(
    plan: ExportPlan, root: Path, write_text: Callable[[str, str], None], warnings: list[str]
) -> dict[str, TableSchema]:
    """Write the schema documents and ``filelists/measurements.tsv``; return the schemas.

    ``write_text(rel, text)`` writes one package file.  A copied table whose header
    is not what its schema describes is named in ``warnings``.
    """
    schemas = plan_schemas(plan)
    if not schemas:
        return schemas
    for rel, schema in schemas.items():
        problem = header_problem(csv_header(root / rel), schema)
        if problem:
            warnings.append(f"{rel}: {problem}")
    for schema in {s.path: s for s in schemas.values()}.values():
        write_text(schema.path, json.dumps(schema.document(), indent=2, ensure_ascii=False) + "\n")
    write_text(MEASUREMENTS_LIST, tsv_text(MEASUREMENT_COLUMNS, _table_rows(plan, root, schemas)))
    return schemas


def table_description(plan: ExportPlan, table: PlannedTable, item: PlannedInput | None) -> str:
    """What a table is, in one sentence (crate and README)."""
    if table.kind == "summary":
        return (
            "the run's summary table: "
            + _TABLE_TEXT["summary"]
            + "; model-generated, not manually curated"
        )
    name = item.name if item is not None else "an image"
    return (
        f"objects of {name}: {_TABLE_TEXT['objects']}, measured in the label image "
        f"{table.labels or '(not exported)'}; model-generated, not manually curated"
    )


def features_text(schemas: Mapping[str, TableSchema]) -> str:
    """The columns of every table layout with their units, in one line (archive)."""
    parts = []
    for schema in {s.path: s for s in schemas.values()}.values():
        shown = ", ".join(f"{c.name} [{c.unit}]" if c.unit else c.name for c in schema.columns)
        parts.append(f"{schema.kind} table ({schema.path}): {shown}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------- checks


def _schema_of(root: Path, rel: str) -> list[dict[str, Any]] | str:
    """The column descriptions of a schema document, or why it is unusable."""
    try:
        columns = list(json.loads((root / rel).read_text(encoding="utf-8"))["columns"])
        if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns):
            return "not a readable table schema (a column has no name)"
        return columns
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"not a readable table schema ({exc})"


_UNIT_SUFFIX = re.compile(r".*_(px|um|um2|um3)")


def check_tables(root: Path, files: set[str]) -> list[tuple[str, str]]:
    """Problems of the measurement tables of a written package, as (path, message).

    Every table of ``filelists/measurements.tsv`` must be in the package, name a
    schema document that is, and have exactly the columns that schema describes,
    each with a description, and a unit where its name ends with one.
    """
    if MEASUREMENTS_LIST not in files:
        tables = sorted(f for f in files if f.startswith("measurements/") and f.endswith(".csv"))
        return (
            [(MEASUREMENTS_LIST, f"missing, but the package holds {tables[0]}")] if tables else []
        )
    problems: list[tuple[str, str]] = []
    header, rows = read_tsv(root / MEASUREMENTS_LIST)
    if tuple(header) != MEASUREMENT_COLUMNS:
        return [(MEASUREMENTS_LIST, f"header is not {' | '.join(MEASUREMENT_COLUMNS)}")]
    for n, row in enumerate(rows, start=2):
        table, schema = row["Files"], row["Table Schema"]
        for cell in ("Files", "Table Schema", "Source Image", "Label Image"):
            value = row[cell]
            if value and value not in files and not (root / value).is_dir():
                problems.append((MEASUREMENTS_LIST, f"line {n}: {cell} {value!r} is not there"))
        if row["Table"] == "objects" and not row["Source Image"]:
            problems.append((MEASUREMENTS_LIST, f"line {n}: {table} names no source image"))
        if table not in files or schema not in files:
            continue
        columns = _schema_of(root, schema)
        if isinstance(columns, str):
            problems.append((schema, columns))
            continue
        try:
            found = csv_header(root / table)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((table, f"cannot be read ({exc})"))
            continue
        problem = header_problem(found, TableSchema("", schema, tuple(_columns(columns))))
        if problem:
            problems.append((table, f"{problem} ({schema})"))
        for column in columns:
            if not column.get("dc:description"):
                problems.append((schema, f"column {column['name']} has no description"))
            if _UNIT_SUFFIX.fullmatch(str(column["name"])) and not column.get("schema:unitText"):
                problems.append((schema, f"column {column['name']} has no unit"))
    return problems
