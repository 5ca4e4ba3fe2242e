"""Objects in prediction runs: the tables, the record, measure, resume and bad input.

The runs use the real nuclei model, or an identity model (a 1x1 convolution of
weight 1 built here) whose output is the input itself: the probability maps are
then drawn by the test, and the objects the run must find are known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.draw import disk

from tests.batch_helpers import request, run, statuses
from tests.onnx_factory import conv_model, write_package
from zoodesk.batch.objects import SUMMARY_NAME
from zoodesk.batch.record import RECORD_NAME
from zoodesk.batch.runner import StreamingPolicy
from zoodesk.cli import main
from zoodesk.instances import InstanceSettings
from zoodesk.instances import segment as segment_module
from zoodesk.models.package import ModelPackage, load_model_package

FACE_2D = ndi.generate_binary_structure(2, 1)

OBJECT_COLUMNS_2D = [
    "label",
    "frame",
    "centroid_y_px",
    "centroid_x_px",
    "centroid_y_um",
    "centroid_x_um",
    "bbox_min_y_px",
    "bbox_min_x_px",
    "bbox_max_y_px",
    "bbox_max_x_px",
    "bbox_min_y_um",
    "bbox_min_x_um",
    "bbox_max_y_um",
    "bbox_max_x_um",
    "area_px",
    "area_um2",
    "equivalent_diameter_px",
    "equivalent_diameter_um",
    "eccentricity",
    "solidity",
]
SUMMARY_COLUMNS_2D = [
    "image",
    "input",
    "scene",
    "frames",
    "count",
    "mean_area_px",
    "median_area_px",
    "mean_area_um2",
    "median_area_um2",
    "mean_equivalent_diameter_um",
]


def intensity_columns(channel: str) -> list[str]:
    return [f"{s}_intensity_{channel}" for s in ("mean", "min", "max", "integrated")]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A model whose output ``prob`` (range 0..1) is its input ``raw``, any size from 16."""
    folder = tmp_path_factory.mktemp("identity")
    weights = folder / "weights.onnx"
    conv_model(weights, radius=0)  # a 1x1 kernel of weight 1
    space = [{"type": "space", "id": a, "size": {"min": 16, "step": 8}} for a in "yx"]
    out_space = [
        {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}} for a in "yx"
    ]
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    description = write_package(
        folder / "pkg",
        weights,
        inputs=[
            {
                "id": "raw",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]}, *space],
            }
        ],
        outputs=[
            {
                "id": "prob",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["foreground"]},
                    *out_space,
                ],
                "data": {"range": [0.0, 1.0]},
            }
        ],
        test_arrays={"raw": x, "prob": x},
        name="identity",
    )
    return load_model_package(description)


def disc_map(
    shape: tuple[int, int], discs: Sequence[tuple[float, float, float]], seed: int = 0
) -> np.ndarray:
    """0.9 inside the discs, 0.05 outside, uniform noise of at most ±0.04 (float32)."""
    union = np.zeros(shape, dtype=bool)
    for cy, cx, r in discs:
        rr, cc = disk((cy, cx), r, shape=shape)
        union[rr, cc] = True
    noise = np.random.default_rng(seed).uniform(-0.04, 0.04, shape)
    return (np.where(union, 0.9, 0.05) + noise).astype(np.float32)


# Three isolated discs and two touching pairs (centres 2r - 2 apart).
DISCS = [
    (20, 20, 8),
    (60, 100, 10),
    (100, 30, 7),
    (30, 70, 9),
    (30, 86, 9),
    (95, 80, 8),
    (109, 80, 8),
]
SINGLES, PAIRS = 3, 2
SHAPE = (128, 128)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))


def entry_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["files"] if Path(f["input"]).name == name)


# ------------------------------------------------------------------ the nuclei model


def test_nuclei_model_objects_are_scipys_components_of_the_test_output(
    nuclei_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = np.load(nuclei_dir / "test_input.npy")[0, 0]
    expected_map = np.load(nuclei_dir / "test_output.npy")[0, 0]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys,
        "predict",
        "-m",
        nuclei_dir / "bioimageio.yaml",
        "--input",
        tmp_path / "nuclei.tif",
        "--output",
        out,
        "--device",
        "cpu",
        "--instances",
        "threshold",
        "--threshold",
        "0.5",
    )
    assert code == 0, err
    # The documented method: above 0.5, face-connected components, numbered in raster
    # order of their first pixel (as SciPy numbers them).
    expected, count = ndi.label(expected_map > 0.5, structure=FACE_2D)
    labels = tifffile.imread(out / "nuclei_instances.ome.tif")
    near_half = np.abs(expected_map - 0.5) < 1e-5
    assert count > 20
    np.testing.assert_array_equal(labels, expected, err_msg=f"{near_half.sum()} px near 0.5")
    table = pd.read_csv(out / "nuclei_objects.csv")
    assert len(table) == count
    np.testing.assert_array_equal(table["area_px"], np.bincount(expected.ravel())[1:])
    np.testing.assert_allclose(
        table[["centroid_y_px", "centroid_x_px"]],
        ndi.center_of_mass(expected > 0, expected, range(1, count + 1)),
    )
    # Intensities are the input's, over each object.
    np.testing.assert_allclose(
        table["integrated_intensity_c0"],
        ndi.sum(image.astype(np.float64), expected, range(1, count + 1)),
        rtol=1e-6,
    )
    summary = pd.read_csv(out / SUMMARY_NAME)
    assert list(summary["count"]) == [count]
    assert summary["mean_area_px"][0] == pytest.approx(np.bincount(expected.ravel())[1:].mean())
    entry = entry_of(record_of(out), "nuclei.tif")
    assert entry["instances"]["count"] == count
    assert entry["instances"]["settings"]["method"] == "threshold"
    kinds = {o["kind"]: o["path"] for o in entry["outputs"]}
    assert kinds == {
        "probabilities": "nuclei_probability.ome.tif",
        "instance-labels": "nuclei_instances.ome.tif",
        "measurements": "nuclei_objects.csv",
    }


# ------------------------------------------------------------------ tables and record


def test_tables_have_the_documented_columns_and_one_summary_row_per_image(
    identity: ModelPackage, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", disc_map(SHAPE, DISCS))
    tifffile.imwrite(folder / "b.tif", disc_map(SHAPE, DISCS[:2], seed=1))
    # A two-channel input with names and pixel sizes; the model is fed channel 0.
    dapi = disc_map((96, 112), [(30, 30, 10), (60, 80, 12)], seed=2)
    gfp = np.full(dapi.shape, 3.0, dtype=np.float32)
    gfp[60, 80] = 7.0  # inside the second disc: its maximum
    multi = tmp_path / "multi.ome.tif"
    tifffile.imwrite(
        multi,
        np.stack([dapi, gfp]),
        ome=True,
        metadata={
            "axes": "CYX",
            "PhysicalSizeX": 0.5,
            "PhysicalSizeY": 0.5,
            "Channel": {"Name": ["DAPI", "GFP"]},
        },
    )
    out = tmp_path / "out"
    settings = InstanceSettings(method="watershed", source="prob")
    _, finished = run(request(identity, [folder, multi], out, channels=[0], instances=settings))
    assert statuses(finished) == {"a.tif": "ok", "b.tif": "ok", "multi.ome.tif": "ok"}

    a = pd.read_csv(out / "a_objects.csv")
    assert list(a.columns) == OBJECT_COLUMNS_2D + intensity_columns("c0")
    assert len(a) == SINGLES + 2 * PAIRS
    assert a["area_um2"].isna().all()  # no pixel size in a plain TIFF
    m = pd.read_csv(out / "multi_objects.csv")
    assert list(m.columns) == OBJECT_COLUMNS_2D + intensity_columns("DAPI") + intensity_columns(
        "GFP"
    )
    assert len(m) == 2
    np.testing.assert_allclose(m["area_um2"], m["area_px"] * 0.25)
    np.testing.assert_allclose(m["centroid_x_um"], m["centroid_x_px"] * 0.5)
    np.testing.assert_allclose(m["equivalent_diameter_um"], m["equivalent_diameter_px"] * 0.5)
    second = m.iloc[int(np.argmax(m["area_px"]))]
    assert second["max_intensity_GFP"] == 7.0
    assert second["min_intensity_GFP"] == 3.0
    assert second["integrated_intensity_GFP"] == pytest.approx(3.0 * second["area_px"] + 4.0)
    assert second["mean_intensity_DAPI"] == pytest.approx(0.9, abs=0.01)

    summary = pd.read_csv(out / SUMMARY_NAME)
    assert list(summary["image"]) == ["a", "b", "multi"]
    assert list(summary["count"]) == [SINGLES + 2 * PAIRS, 2, 2]
    assert list(summary["frames"]) == [1, 1, 1]
    for column in [*SUMMARY_COLUMNS_2D, "mean_intensity_c0", "mean_intensity_DAPI"]:
        assert column in summary.columns, column
    assert "mean_intensity_GFP" in summary.columns
    row = summary.set_index("image").loc["multi"]
    assert row["mean_area_um2"] == pytest.approx(m["area_um2"].mean())
    assert row["median_area_px"] == pytest.approx(m["area_px"].median())
    assert row["mean_intensity_GFP"] == pytest.approx(m["mean_intensity_GFP"].mean())
    assert pd.isna(summary.set_index("image").loc["a", "mean_area_um2"])

    record = record_of(out)
    assert record["parameters"]["instances"]["method"] == "watershed"
    found = entry_of(record, "multi.ome.tif")["instances"]
    assert found["intensity_channels"] == ["DAPI", "GFP"]
    assert found["spatial_axes"] == "YX"
    labels = tifffile.imread(out / found["labels"])
    assert labels.dtype == np.uint16 and labels.shape == dapi.shape
    with tifffile.TiffFile(out / found["labels"]) as tif:
        ome = tif.ome_metadata or ""
    assert "instances.method" in ome and 'PhysicalSizeX="0.5"' in ome


def test_a_streamed_run_finds_the_same_objects(identity: ModelPackage, tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", disc_map(SHAPE, DISCS))
    settings = InstanceSettings(method="watershed", source="prob", block=64)
    for mode in ("never", "always"):
        run(
            request(
                identity,
                [tmp_path / "a.tif"],
                tmp_path / mode,
                instances=settings,
                streaming=StreamingPolicy(mode=mode),
            )
        )
    assert entry_of(record_of(tmp_path / "always"), "a.tif")["streamed"] is True
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "always" / "a_instances.ome.tif"),
        tifffile.imread(tmp_path / "never" / "a_instances.ome.tif"),
    )
    assert (tmp_path / "always" / "a_objects.csv").read_text() == (
        tmp_path / "never" / "a_objects.csv"
    ).read_text()


def test_objects_of_a_streamed_image_are_made_in_memory_bounded_by_the_block(
    identity: ModelPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labelling, measuring and writing a streamed image never hold an image-sized
    array: not the output read back (16 MiB decoded here), nor the labels, nor the
    objects' masks or table; the objects are those of the image measured whole.  The
    sizes that bound the memory (caches, batches, the frames labelled without the
    scratch store) are made small, so that the image is large beside them."""
    import tracemalloc

    from zoodesk.batch.objects import measure_run
    from zoodesk.images import tiles as tiles_module
    from zoodesk.images import writers as writers_module
    from zoodesk.instances import measure as measure_module
    from zoodesk.instances import step as step_module

    shape = (2048, 2048)
    centres = [(y, x, 6 + (y + x) % 5) for y in range(16, 2048, 32) for x in range(16, 2048, 32)]
    tifffile.imwrite(tmp_path / "a.tif", disc_map(shape, centres))
    for mode in ("never", "always"):
        run(
            request(
                identity,
                [tmp_path / "a.tif"],
                tmp_path / mode,
                streaming=StreamingPolicy(mode=mode),
            )
        )
    list(measure_run(tmp_path / "never", "threshold", {"block": 128}))
    monkeypatch.setattr(segment_module, "IN_MEMORY_PIXELS", 0)
    monkeypatch.setattr(segment_module, "TILE_CACHE_BYTES", 1 << 20)
    monkeypatch.setattr(tiles_module, "TILE_CACHE_BYTES", 1 << 20)
    monkeypatch.setattr(step_module, "STREAMED_BATCH_PIXELS", 1 << 14)
    monkeypatch.setattr(measure_module, "SPILL_ROWS", 256)
    monkeypatch.setattr(writers_module, "_ENCODE_BUFFER_BYTES", 1 << 20)
    list(measure_run(tmp_path / "always", "threshold", {"block": 128}))  # imports done
    tracemalloc.start()
    try:
        list(measure_run(tmp_path / "always", "threshold", {"block": 128}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    record = record_of(tmp_path / "always")
    assert entry_of(record, "a.tif")["streamed"] is True
    assert entry_of(record, "a.tif")["instances"]["count"] == len(centres)
    output_bytes = shape[0] * shape[1] * 4
    assert peak < output_bytes / 2, f"{peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "always" / "a_instances.ome.tif"),
        tifffile.imread(tmp_path / "never" / "a_instances.ome.tif"),
    )
    assert (tmp_path / "always" / "a_objects.csv").read_text() == (
        tmp_path / "never" / "a_objects.csv"
    ).read_text()


# ------------------------------------------------------------ measure, re-run, resume


def test_measure_remakes_the_objects_without_the_model_and_rerun_refuses(
    identity: ModelPackage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", disc_map(SHAPE, DISCS))
    model = identity.description_path
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "predict", "-m", model, "-i", folder, "-o", out, "--device", "cpu",
        "--instances", "watershed", "--settle-seconds", "0",
    )  # fmt: skip
    assert code == 0, err
    assert entry_of(record_of(out), "a.tif")["instances"]["count"] == SINGLES + 2 * PAIRS
    probability_file = (out / "a_prob.ome.tif").read_bytes()

    code, _, err = cli(capsys, "measure", out, "--instances", "threshold")
    assert code == 0, err
    record = record_of(out)
    assert record["parameters"]["instances"]["method"] == "threshold"
    entry = entry_of(record, "a.tif")
    assert entry["instances"]["count"] == SINGLES + PAIRS  # each pair is one object now
    assert len(pd.read_csv(out / "a_objects.csv")) == SINGLES + PAIRS
    assert list(pd.read_csv(out / SUMMARY_NAME)["count"]) == [SINGLES + PAIRS]
    labels = tifffile.imread(out / "a_instances.ome.tif")
    expected, _ = ndi.label(tifffile.imread(folder / "a.tif") > 0.5, structure=FACE_2D)
    np.testing.assert_array_equal(labels, expected)
    assert (out / "a_prob.ome.tif").read_bytes() == probability_file  # the model's output stays
    assert [o["kind"] for o in entry["outputs"]].count("instance-labels") == 1
    assert [o["kind"] for o in entry["outputs"]].count("measurements") == 1

    # A prediction into the same folder with other objects settings is refused.
    code, _, err = cli(
        capsys, "predict", "-m", model, "-i", folder, "-o", out, "--device", "cpu",
        "--instances", "watershed", "--min-size", "30", "--settle-seconds", "0",
    )  # fmt: skip
    assert code != 0
    assert "--instances" in err and "zoodesk measure" in err
    assert len(pd.read_csv(out / "a_objects.csv")) == SINGLES + PAIRS  # untouched
    # The same settings as the folder's (now threshold) are accepted: nothing to redo.
    code, _, err = cli(
        capsys, "predict", "-m", model, "-i", folder, "-o", out, "--device", "cpu",
        "--instances", "threshold", "--settle-seconds", "0",
    )  # fmt: skip
    assert code == 0, err
    assert entry_of(record_of(out), "a.tif")["status"] == "skipped"


def test_a_resumed_run_skips_finished_inputs_and_keeps_their_objects(
    identity: ModelPackage, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", disc_map(SHAPE, DISCS))
    tifffile.imwrite(folder / "b.tif", disc_map(SHAPE, DISCS[:4], seed=1))
    out = tmp_path / "out"
    settings = InstanceSettings(method="watershed", source="prob")
    run(request(identity, [folder], out, instances=settings))
    kept = {
        name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns)
        for name in ("a_objects.csv", "a_instances.ome.tif", "b_objects.csv")
    }
    tifffile.imwrite(folder / "c.tif", disc_map(SHAPE, DISCS[:1], seed=2))
    _, finished = run(request(identity, [folder], out, instances=settings))
    assert statuses(finished) == {"a.tif": "skipped", "b.tif": "skipped", "c.tif": "ok"}
    for name, (data, mtime) in kept.items():
        assert (out / name).read_bytes() == data
        assert (out / name).stat().st_mtime_ns == mtime
    record = record_of(out)
    assert entry_of(record, "a.tif")["instances"]["count"] == SINGLES + 2 * PAIRS
    assert entry_of(record, "b.tif")["instances"]["count"] == 4
    summary = pd.read_csv(out / SUMMARY_NAME)
    assert dict(zip(summary["image"], summary["count"], strict=True)) == {
        "a": SINGLES + 2 * PAIRS,
        "b": 4,
        "c": 1,
    }


# --------------------------------------------------------------------------- hostile


def test_a_threshold_far_too_low_fails_that_image_only(
    identity: ModelPackage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The refusal is for objects whose box exceeds 2**27 pixels (a frame of 11600^2);
    # lowered here so that a frame of 1.4 megapixels stands for one.
    monkeypatch.setattr(segment_module, "MAX_COMPONENT_PIXELS", 1 << 20)
    folder = tmp_path / "in"
    folder.mkdir()
    big = np.random.default_rng(0).uniform(0.02, 0.1, (1200, 1200)).astype(np.float32)
    tifffile.imwrite(folder / "big.tif", big)
    small = disc_map(SHAPE, DISCS) * 0.2  # discs at 0.18, background at 0.01 ± 0.008
    tifffile.imwrite(folder / "small.tif", small)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "predict", "-m", identity.description_path, "-i", folder, "-o", out,
        "--device", "cpu", "--instances", "threshold", "--threshold", "0.03",
        "--settle-seconds", "0",
    )  # fmt: skip
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "big.tif" in line and "failed" in line]
    assert len(lines) == 1, err
    assert "threshold" in lines[0] and "too low" in lines[0]
    record = record_of(out)
    big_entry, small_entry = entry_of(record, "big.tif"), entry_of(record, "small.tif")
    assert big_entry["status"] == "failed"
    assert "threshold" in big_entry["instances"]["error"]
    # Its model output was written and stays recorded; no label image or table.
    assert (out / "big_prob.ome.tif").is_file()
    assert not (out / "big_objects.csv").exists()
    assert small_entry["status"] == "ok"
    assert small_entry["instances"]["count"] == SINGLES + PAIRS
    summary = pd.read_csv(out / SUMMARY_NAME)
    assert list(summary["image"]) == ["small"]


def test_an_empty_map_gives_a_summary_row_with_count_zero(
    identity: ModelPackage, tmp_path: Path
) -> None:
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((64, 64), dtype=np.float32))
    tifffile.imwrite(tmp_path / "one.tif", disc_map((64, 64), [(30, 30, 10)]))
    out = tmp_path / "out"
    settings = InstanceSettings(method="watershed", source="prob", threshold="otsu")
    _, finished = run(
        request(identity, [tmp_path / "empty.tif", tmp_path / "one.tif"], out, instances=settings)
    )
    assert statuses(finished) == {"empty.tif": "ok", "one.tif": "ok"}
    summary = pd.read_csv(out / SUMMARY_NAME).set_index("image")
    assert summary.loc["empty", "count"] == 0
    assert pd.isna(summary.loc["empty", "mean_area_px"])
    assert summary.loc["one", "count"] == 1
    assert len(pd.read_csv(out / "empty_objects.csv")) == 0
    assert not tifffile.imread(out / "empty_instances.ome.tif").any()


def test_a_channel_the_output_lacks_is_refused_before_the_run(
    identity: ModelPackage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tifffile.imwrite(tmp_path / "a.tif", disc_map(SHAPE, DISCS))
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "predict", "-m", identity.description_path, "-i", tmp_path / "a.tif",
        "-o", out, "--device", "cpu", "--instances", "threshold", "--instance-channel", "5",
    )  # fmt: skip
    assert code != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1, err
    assert "channel 5" in errors[0] and "prob" in errors[0]
    assert not out.exists()


def test_instance_options_without_instances_are_refused(
    identity: ModelPackage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tifffile.imwrite(tmp_path / "a.tif", disc_map(SHAPE, DISCS))
    code, _, err = cli(
        capsys, "predict", "-m", identity.description_path, "-i", tmp_path / "a.tif",
        "-o", tmp_path / "out", "--device", "cpu", "--min-size", "20",
    )  # fmt: skip
    assert code != 0
    assert "--min-size" in err and "--instances" in err
    assert not (tmp_path / "out").exists()


def test_measure_that_fails_for_an_image_leaves_no_stale_objects(
    identity: ModelPackage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", disc_map(SHAPE, DISCS) * 0.2)  # discs ~0.18, rest < 0.02
    noise = np.random.default_rng(0).uniform(0.02, 0.1, (200, 200)).astype(np.float32)
    tifffile.imwrite(folder / "b.tif", noise)
    out = tmp_path / "out"
    settings = InstanceSettings(method="watershed", source="prob", threshold=0.1)
    run(request(identity, [folder], out, instances=settings))
    assert (out / "b_objects.csv").is_file()
    # At 0.03 the noise of b.tif is one object spanning the image: refused (the limit
    # lowered, as in the test above); a.tif's discs are found.
    monkeypatch.setattr(segment_module, "MAX_COMPONENT_PIXELS", 1 << 14)
    code, _, err = cli(capsys, "measure", out, "--instances", "threshold", "--threshold", "0.03")
    assert code == 1
    assert len([line for line in err.splitlines() if "b.tif" in line]) == 1, err

    def consistent() -> dict[str, Any]:
        """The record, after checking that it and the folder tell the same objects."""
        record = record_of(out)
        for entry in record["files"]:
            kinds = [o["kind"] for o in entry["outputs"]]
            found = entry["instances"]
            if "error" in found:
                # No label image or table of other settings is left as this image's.
                assert "instance-labels" not in kinds and "measurements" not in kinds
                assert not (out / f"{entry['key']}_objects.csv").exists()
                assert not (out / f"{entry['key']}_instances.ome.tif").exists()
            else:
                assert len(pd.read_csv(out / f"{entry['key']}_objects.csv")) == found["count"]
        with_objects = {
            f["key"]: f["instances"]["count"] for f in record["files"] if "count" in f["instances"]
        }
        if (out / SUMMARY_NAME).exists():
            summary = pd.read_csv(out / SUMMARY_NAME)
            assert dict(zip(summary["image"], summary["count"], strict=True)) == with_objects
        else:
            assert not with_objects
        return record

    record = consistent()
    assert entry_of(record, "a.tif")["instances"]["count"] == SINGLES + PAIRS
    assert "too low" in entry_of(record, "b.tif")["instances"]["error"]
    # Both refused now: no summary may still speak of objects.
    monkeypatch.setattr(segment_module, "MAX_COMPONENT_PIXELS", 16)
    code, _, _ = cli(capsys, "measure", out, "--instances", "threshold", "--threshold", "0.03")
    assert code == 1
    consistent()


def test_a_time_series_into_ome_zarr_has_per_frame_objects_in_the_store(
    identity: ModelPackage, tmp_path: Path
) -> None:
    import zarr

    frames = [DISCS, [], DISCS[:2], DISCS[3:5]]  # 7, 0, 2 and 1 (a touching pair) objects
    stack = np.stack([disc_map(SHAPE, d, seed=i) for i, d in enumerate(frames)])
    tifffile.imwrite(tmp_path / "t.tif", stack, photometric="minisblack", metadata={"axes": "TYX"})
    out = tmp_path / "out"
    settings = InstanceSettings(method="threshold", source="prob")
    _, finished = run(
        request(identity, [tmp_path / "t.tif"], out, instances=settings, output_format="ome-zarr")
    )
    assert statuses(finished) == {"t.tif": "ok"}
    entry = entry_of(record_of(out), "t.tif")
    labels_path = {o["kind"]: o["path"] for o in entry["outputs"]}["instance-labels"]
    assert labels_path == "t_prob.ome.zarr/labels/instances"
    assert not (out / "t_instances.ome.tif").exists()
    group = zarr.open_group(str(out / labels_path), mode="r")
    assert group.attrs["ome"]["image-label"]["source"]["image"] == "../../"
    labels = np.asarray(group["0"])
    assert labels.shape == stack.shape
    table = pd.read_csv(out / "t_objects.csv")
    expected_counts = []
    for t in range(len(frames)):
        expected, n = ndi.label(stack[t] > 0.5, structure=FACE_2D)
        np.testing.assert_array_equal(labels[t], expected, err_msg=f"frame {t}")
        expected_counts.append(n)
        rows = table[table["frame"] == t]
        assert sorted(rows["area_px"]) == sorted(np.bincount(expected.ravel())[1:])
    assert expected_counts == [SINGLES + PAIRS, 0, 2, 1]
    assert entry["instances"]["count"] == sum(expected_counts)
    summary = pd.read_csv(out / SUMMARY_NAME)
    assert list(summary["frames"]) == [len(frames)]
    assert list(summary["count"]) == [sum(expected_counts)]


def test_cancelling_while_objects_are_made_keeps_the_outputs_and_says_cancelled(
    identity: ModelPackage, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", disc_map(SHAPE, DISCS))
    out = tmp_path / "out"
    settings = InstanceSettings(method="watershed", source="prob")

    def cancelled() -> bool:
        # From the moment the first image's map is written: its objects are being made.
        return (out / "a_prob.ome.tif").exists()

    _, finished = run(
        request(identity, [tmp_path / "a.tif", tmp_path / "b.tif"], out, instances=settings),
        cancelled=cancelled,
    )
    record = finished.record
    assert record.status == "cancelled"
    first = record.files[0]
    assert (first.status, first.error) == ("not done", "cancelled")
    assert [o.path for o in first.outputs] == ["a_prob.ome.tif"]
    assert not (out / "a_objects.csv").exists()
    assert record.files[1].status == "not done"


def test_a_single_plane_stack_is_measured_with_its_intensities(
    identity: ModelPackage, tmp_path: Path
) -> None:
    # A .npy of shape (1, 1, Y, X) reads as a one-plane Z-stack: the objects are 2D.
    image = disc_map(SHAPE, DISCS)
    np.save(tmp_path / "stack.npy", image[None, None])
    out = tmp_path / "out"
    settings = InstanceSettings(method="threshold", source="prob")
    _, finished = run(request(identity, [tmp_path / "stack.npy"], out, instances=settings))
    (entry,) = finished.record.files
    assert entry.status == "ok", entry.error
    assert entry.instances is not None and entry.instances["warnings"] == []
    table = pd.read_csv(out / "stack_objects.csv")
    labels = tifffile.imread(out / "stack_instances.ome.tif").squeeze()
    for _, row in table.iterrows():
        inside = image[labels == row["label"]]
        assert row["mean_intensity_c0"] == pytest.approx(float(inside.mean()), rel=1e-6)
