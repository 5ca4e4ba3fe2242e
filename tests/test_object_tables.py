"""Reading the objects tables back (one image's, and a whole run's), histograms, and the
settings checks a form relies on."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import NUCLEI
from tests.objects_helpers import nuclei_images, objects_run
from zoodesk.batch.objects import (
    ImageMeasured,
    MeasureFinished,
    measure_run,
    object_table,
    run_measurements,
)
from zoodesk.batch.record import RunRecord
from zoodesk.errors import ZooDeskError
from zoodesk.instances import InstanceSettings, InstanceSettingsError, method_unavailable, resolve
from zoodesk.instances.measure import histogram, numbers, read_table
from zoodesk.models.package import load_model_package


@pytest.fixture(scope="module")
def run_record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished nuclei run with objects (watershed), made once for the module."""
    base = tmp_path_factory.mktemp("objects-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOODESK_HOME", str(base / "home"))
        nuclei_images(base / "images")
        yield objects_run(
            base / "images",
            base / "run",
            InstanceSettings(method="watershed", source="probability"),
        )


def _objects_csv(run: Path) -> dict[str, pd.DataFrame]:
    record = json.loads(run.read_text(encoding="utf-8"))
    return {f["key"]: pd.read_csv(run.parent / f["instances"]["objects"]) for f in record["files"]}


def test_a_table_reads_back_as_text_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("label,frame,area_px,area_um2\n1,0,10,\n2,0,3,0.75\n", encoding="utf-8")
    columns, rows = read_table(path)
    assert columns == ["label", "frame", "area_px", "area_um2"]
    assert rows[1] == {"label": "2", "frame": "0", "area_px": "3", "area_um2": "0.75"}
    np.testing.assert_array_equal(numbers(rows, "area_px"), [10.0, 3.0])
    assert np.isnan(numbers(rows, "area_um2")[0]) and numbers(rows, "area_um2")[1] == 0.75
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ZooDeskError, match=r"empty\.csv: empty file"):
        read_table(empty)
    with pytest.raises(ZooDeskError, match=r"gone\.csv: cannot read the table"):
        read_table(tmp_path / "gone.csv")


def test_histogram_counts_the_finite_values_in_equal_bins() -> None:
    counts, edges = histogram(np.array([1.0, 1.0, 2.0, 10.0, np.nan, np.inf]), bins=3)
    # Bins of width 3 from 1 to 10: [1, 4), [4, 7), [7, 10].
    assert counts.tolist() == [3, 0, 1]
    assert edges.tolist() == [1.0, 4.0, 7.0, 10.0]
    counts, edges = histogram(np.array([np.nan]), bins=4)
    assert counts.tolist() == [0, 0, 0, 0] and len(edges) == 5


def test_one_images_table_finds_its_objects(run_record: Path, tmp_path: Path) -> None:
    shutil.copytree(run_record.parent, tmp_path / "run")
    run_record = tmp_path / "run" / run_record.name
    record = RunRecord.load(run_record)
    tables = _objects_csv(run_record)
    for entry in record.files:
        table = object_table(record, entry)
        assert table is not None
        expected = tables[entry.key]
        assert table.columns == list(expected.columns)
        assert len(table.rows) == len(expected) == entry.instances["count"]
        some = expected.iloc[len(expected) // 2]
        row = table.find(int(some["label"]), int(some["frame"]))
        assert row is not None and int(row["area_px"]) == int(some["area_px"])
        assert table.find(int(expected["label"].max()) + 1) is None
    entry = record.files[0]
    (run_record.parent / entry.instances["objects"]).unlink()
    with pytest.raises(ZooDeskError, match=r"nuclei_a_objects\.csv"):
        object_table(record, entry)
    # A run without a table is told apart from a problem.
    entry.instances = None
    assert object_table(record, entry) is None


def test_a_runs_measurements_gather_every_object(run_record: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_record.parent, run)
    tables = _objects_csv(run / run_record.name)
    every = pd.concat(list(tables.values()), ignore_index=True)
    measured = run_measurements(RunRecord.load(run / run_record.name))
    assert measured.images == 2 and measured.objects == len(every)
    # Sizes first, positions last; identifiers are not measurements.
    assert measured.columns[0] == "area_px"
    assert "label" not in measured.columns and "frame" not in measured.columns
    assert measured.columns[-1].startswith("bbox_")
    assert "area_um2" in measured.columns and measured.units["area_um2"] == "µm²"
    for column in ("area_px", "area_um2", "mean_intensity_c0", "solidity"):
        np.testing.assert_allclose(measured.values[column], every[column].to_numpy(float))
        counts, edges = measured.histogram(column, 12)
        expected_counts, expected_edges = np.histogram(every[column].dropna(), bins=12)
        assert counts.tolist() == expected_counts.tolist()
        np.testing.assert_allclose(edges, expected_edges)
    # A table that cannot be read is named, and the others are still gathered.
    (run / tables_path(run, "nuclei_b")).write_bytes(b"\xff\xfe\x00broken")
    partial = run_measurements(RunRecord.load(run / run_record.name))
    assert partial.images == 1 and partial.objects == len(tables["nuclei_a"])
    assert len(partial.problems) == 1 and "nuclei_b_objects.csv" in partial.problems[0]


def tables_path(run: Path, key: str) -> str:
    record = json.loads((run / "zoodesk-run.json").read_text(encoding="utf-8"))
    return next(f["instances"]["objects"] for f in record["files"] if f["key"] == key)


def test_cancelling_a_remake_keeps_the_earlier_objects(run_record: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_record.parent, run)
    before = json.loads((run / "zoodesk-run.json").read_text(encoding="utf-8"))
    labels_b = (run / "nuclei_b_instances.ome.tif").read_bytes()
    seen = {"images": 0}
    checks = itertools.count()

    def cancelled() -> bool:
        # Cancelled part-way through the second image, as a click during it would.
        return seen["images"] >= 1 and next(checks) > 5

    events = []
    for event in measure_run(run, "threshold", {}, cancelled=cancelled):
        events.append(event)
        if isinstance(event, ImageMeasured):
            seen["images"] += 1
    finished = events[-1]
    assert isinstance(finished, MeasureFinished)
    assert finished.cancelled and finished.failed == 0
    assert [e.error for e in events if isinstance(e, ImageMeasured)] == [None]
    after = json.loads((run / "zoodesk-run.json").read_text(encoding="utf-8"))
    a, b = after["files"]
    assert a["instances"]["settings"]["method"] == "threshold"
    # The second image keeps its objects, files and entry alike.
    assert b["instances"] == before["files"][1]["instances"]
    assert b["outputs"] == before["files"][1]["outputs"]
    assert (run / "nuclei_b_instances.ome.tif").read_bytes() == labels_b
    # Not every image has the new settings: the run's own stay.
    assert after["parameters"]["instances"] == before["parameters"]["instances"]
    summary = pd.read_csv(run / "summary.csv")
    assert summary["count"].tolist() == [a["instances"]["count"], b["instances"]["count"]]


def test_settings_problems_name_the_setting() -> None:
    spec = load_model_package(NUCLEI / "bioimageio.yaml").spec
    cases = {
        "max_size": ("threshold", {"min_size": 50, "max_size": 10}),
        "threshold": ("threshold", {"threshold": "model"}),
        "channel": ("threshold", {"channel": 3}),
        "source": ("threshold", {"source": "nothing"}),
        # The nuclei model's one output has one channel: no boundaries to follow.
        "method": ("boundary", {"boundary_channel": 0}),
    }
    for setting, (choice, overrides) in cases.items():
        with pytest.raises(InstanceSettingsError) as caught:
            resolve(spec, choice, overrides)
        assert caught.value.setting == setting, (setting, str(caught.value))
    with pytest.raises(InstanceSettingsError, match="maximum size 10 is below the minimum size 50"):
        resolve(spec, "threshold", cases["max_size"][1])


def test_only_stardist_is_unavailable() -> None:
    assert method_unavailable("stardist") is not None
    assert "stardist" in str(method_unavailable("stardist"))
    for method in ("threshold", "watershed", "boundary", "labels"):
        assert method_unavailable(method) is None
