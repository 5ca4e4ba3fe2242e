"""The batch runner on real files: inputs, readers, axis mapping, outputs and metadata.

Outputs are checked against a box filter computed with SciPy on the input pixels, so
a wrong axis order, a wrong frame or a wrong channel shows as wrong pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from tests.batch_helpers import (
    box_filter,
    box_package,
    errors,
    output_array,
    request,
    run,
    statuses,
)
from tests.conftest import SHARED
from zoodesk.batch.runner import BlockProgress, FileFinished, RunStarted
from zoodesk.images import read_image
from zoodesk.inference import predict
from zoodesk.models.package import ModelPackage


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def _image(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape).astype(np.float32)


def test_folders_globs_recursion_lists_and_missing_inputs(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "sub").mkdir(parents=True)
    two.mkdir()
    images = {
        one / "a.tif": _image(rng, 32, 40),
        one / "sub" / "c.tif": _image(rng, 24, 32),
        two / "a.tif": _image(rng, 40, 24),
        two / "d.tif": _image(rng, 16, 16),
    }
    for path, pixels in images.items():
        tifffile.imwrite(path, pixels)
    np.save(one / "b.npy", _image(rng, 16, 16))  # not matched by the glob
    listing = tmp_path / "batch.txt"
    listing.write_text(f"# extra inputs\n{two / 'd.tif'}\nmissing.tif\n", encoding="utf-8")
    out = tmp_path / "out"
    _events, finished = run(
        request(
            box2d,
            [one, two],
            out,
            patterns=["*.tif"],
            recursive=True,
            lists=[listing],
        )
    )
    record = finished.record
    by_input = {Path(f.input): f for f in record.files}
    assert by_input[tmp_path / "missing.tif"].status == "failed"
    assert "no such file" in (by_input[tmp_path / "missing.tif"].error or "")
    assert Path(one / "b.npy") not in by_input
    # Keys keep the folder structure and stay unique across input folders.
    keys = {p: by_input[p].key for p in images}
    assert keys == {
        one / "a.tif": "a",
        one / "sub" / "c.tif": "sub/c",
        two / "a.tif": "a-2",
        two / "d.tif": "d",
    }
    for path, pixels in images.items():
        entry = by_input[path]
        assert entry.status == "ok", entry.error
        [output] = entry.outputs
        assert output.path == f"{entry.key}_out.ome.tif"
        np.testing.assert_allclose(output_array(out, output.path), box_filter(pixels), atol=1e-6)


def test_time_lapse_and_extra_z_run_frame_by_frame_with_one_session(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[object] = []
    original = predict.OnnxSession

    def counting(*args: Any, **kwargs: Any) -> object:
        session = original(*args, **kwargs)
        sessions.append(session)
        return session

    monkeypatch.setattr(predict, "OnnxSession", counting)
    movie = _image(rng, 3, 2, 24, 32)  # T, Z, Y, X
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TZYX"})
    stack = _image(rng, 4, 16, 24)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    events, finished = run(request(box2d, [tmp_path / "movie.tif", tmp_path / "stack.tif"], out))
    assert len(sessions) == 1
    assert statuses(finished) == {"movie.tif": "ok", "stack.tif": "ok"}
    entry = finished.record.files[0]
    assert entry.axes_mapping is not None and "6 frame(s) over TZ" in entry.axes_mapping
    assert entry.tiling is not None and entry.tiling["frames"] == 6
    result = read_image(out / "movie_out.ome.tif")
    assert result.axes == "TZYX"  # the output's single channel is squeezed on reading
    for t in range(3):
        for z in range(2):
            np.testing.assert_allclose(result.array[t, z], box_filter(movie[t, z]), atol=1e-6)
    result = read_image(out / "stack_out.ome.tif")
    assert result.axes == "ZYX"
    for z in range(4):
        np.testing.assert_allclose(result.array[z], box_filter(stack[z]), atol=1e-6)
    # Block progress covers every frame of the movie.
    movie_progress = [e for e in events if isinstance(e, BlockProgress) and e.index == 0]
    assert movie_progress[-1].done == movie_progress[-1].total == 6


def test_z_stack_feeds_a_3d_model_whole(tmp_path: Path, rng: np.random.Generator) -> None:
    box3d = box_package(tmp_path / "m3", ndim=3, min_size=8, step=4)
    stack = _image(rng, 12, 16, 20)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    _events, finished = run(request(box3d, [tmp_path / "stack.tif"], out))
    assert statuses(finished) == {"stack.tif": "ok"}, errors(finished)
    result = read_image(out / "stack_out.ome.tif")
    assert result.axes == "ZYX"
    np.testing.assert_allclose(result.array, box_filter(stack), atol=1e-6)
    # A 2D image cannot feed a 3D model: one clear message naming both layouts.
    tifffile.imwrite(tmp_path / "flat.tif", stack[0])
    _events, finished = run(request(box3d, [tmp_path / "flat.tif"], tmp_path / "out2"))
    message = errors(finished)["flat.tif"]
    assert "image axes YX (16, 20)" in message and "bczyx" in message
    assert "no Z axis" in message


def test_channel_selection_and_a_clear_mismatch_message(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator
) -> None:
    cells = _image(rng, 3, 24, 32)
    tifffile.imwrite(tmp_path / "cells.tif", cells, imagej=True, metadata={"axes": "CYX"})
    _events, finished = run(request(box2d, [tmp_path / "cells.tif"], tmp_path / "a"))
    message = errors(finished)["cells.tif"]
    assert message.startswith(str(tmp_path / "cells.tif"))
    assert "image axes CYX (3, 24, 32)" in message and "axes bcyx" in message
    assert "--channel" in message
    _events, finished = run(request(box2d, [tmp_path / "cells.tif"], tmp_path / "b", channels=[2]))
    assert statuses(finished) == {"cells.tif": "ok"}
    np.testing.assert_allclose(
        output_array(tmp_path / "b", "cells_out.ome.tif"), box_filter(cells[2]), atol=1e-6
    )


def test_rgb_png_feeds_a_three_channel_model(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb_model = box_package(tmp_path / "m", channels=3)
    photo = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "photo.png", photo)
    out = tmp_path / "out"
    _events, finished = run(request(rgb_model, [tmp_path / "photo.png"], out))
    assert statuses(finished) == {"photo.png": "ok"}, errors(finished)
    result = read_image(out / "photo_out.ome.tif")
    assert result.axes == "CYX"
    assert result.channel_names == ["o0", "o1", "o2"]
    for c in range(3):
        np.testing.assert_allclose(result.array[c], box_filter(photo[..., c]), atol=1e-4)


def test_axes_given_by_the_user_override_the_guess(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator
) -> None:
    # Two planes of 16 x 24 are guessed as channels (CYX); the user says Z.
    planes = _image(rng, 2, 16, 24)
    np.save(tmp_path / "planes.npy", planes)
    _events, guessed = run(request(box2d, [tmp_path / "planes.npy"], tmp_path / "a"))
    assert "image axes CYX (2, 16, 24)" in errors(guessed)["planes.npy"]
    _events, finished = run(request(box2d, [tmp_path / "planes.npy"], tmp_path / "b", axes="ZYX"))
    assert statuses(finished) == {"planes.npy": "ok"}
    result = read_image(tmp_path / "b" / "planes_out.ome.tif")
    assert result.axes == "ZYX"
    np.testing.assert_allclose(result.array[1], box_filter(planes[1]), atol=1e-6)


def test_series_pyramids_and_physical_metadata(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator
) -> None:
    overview, detail = _image(rng, 16, 16), _image(rng, 40, 48)
    with tifffile.TiffWriter(tmp_path / "scenes.ome.tif", ome=True) as writer:
        writer.write(overview, metadata={"axes": "YX"})
        writer.write(
            detail,
            metadata={
                "axes": "YX",
                "PhysicalSizeX": 0.25,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": 0.3,
                "PhysicalSizeYUnit": "µm",
            },
        )
    full = _image(rng, 64, 48)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif", ome=True) as writer:
        writer.write(full, subifds=1, tile=(16, 16), metadata={"axes": "YX"})
        writer.write(full[::2, ::2], subfiletype=1, tile=(16, 16))
    out = tmp_path / "out"
    inputs = [tmp_path / "scenes.ome.tif", tmp_path / "pyramid.ome.tif"]
    _events, finished = run(request(box2d, inputs, out, series=1))
    # The pyramid has one series: asking for the second one fails for that file only.
    assert statuses(finished) == {"scenes.ome.tif": "ok", "pyramid.ome.tif": "failed"}
    assert "series 1 does not exist" in errors(finished)["pyramid.ome.tif"]
    scenes = finished.record.files[0]
    assert scenes.series == 1
    assert scenes.pixel_sizes == {"X": [0.25, "µm"], "Y": [0.3, "µm"]}
    result = read_image(out / "scenes_out.ome.tif")
    np.testing.assert_allclose(result.array, box_filter(detail), atol=1e-6)
    assert result.pixel_sizes == {"X": (0.25, "µm"), "Y": (0.3, "µm")}
    assert result.channel_names == ["o0"]
    assert result.metadata["provenance"]["source_image_sha256"] == scenes.input_sha256
    _events, finished = run(request(box2d, [tmp_path / "pyramid.ome.tif"], tmp_path / "p"))
    np.testing.assert_allclose(
        output_array(tmp_path / "p", "pyramid_out.ome.tif"), box_filter(full), atol=1e-6
    )


def test_a_vendor_file_runs_with_its_calibration_and_channel_names(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    """A real Olympus OIB (three channels, 0.177 µm pixels) through the batch runner."""
    import oiffile

    oib = SHARED / "sample-images" / "oib" / "test.oib"
    _events, finished = run(request(box2d, [oib], tmp_path / "out", channels=[1]))
    assert statuses(finished) == {"test.oib": "ok"}, errors(finished)
    entry = finished.record.files[0]
    assert entry.axes == "CYX"
    assert entry.pixel_sizes == {"X": [0.177, "µm"], "Y": [0.177, "µm"]}
    result = read_image(tmp_path / "out" / "test_out.ome.tif")
    pixels = oiffile.imread(str(oib))[1].astype(np.float32)
    np.testing.assert_allclose(result.array, box_filter(pixels), rtol=1e-5, atol=1e-3)
    assert result.pixel_sizes == {"X": (0.177, "µm"), "Y": (0.177, "µm")}


def test_run_started_reports_the_work_and_the_record_every_field(
    tmp_path: Path, box2d: ModelPackage, rng: np.random.Generator
) -> None:
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", _image(rng, 16, 24))
    out = tmp_path / "out"
    events, finished = run(request(box2d, [tmp_path], out, tile={"y": 16, "x": 16}))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert (started.total, started.to_do, started.skipped) == (2, 2, 0)
    assert started.to_do_bytes == sum((tmp_path / f"{n}.tif").stat().st_size for n in "ab")
    assert started.record_path == out / "zoodesk-run.json"
    record = finished.record
    assert record.signature["tile"] == {"x": 16, "y": 16}
    assert record.parameters["series"] is None  # each series of multi-series files
    assert record.parameters["scenes"] == []
    for entry in record.files:
        assert entry.status == "ok"
        assert entry.run_id == record.run_id
        assert entry.read_seconds is not None and entry.write_seconds is not None
        assert entry.inference_seconds is not None and entry.seconds is not None
        assert entry.streamed is False
        assert entry.tiling is not None and entry.tiling["blocks"] == 2
    assert [e.entry.status for e in events if isinstance(e, FileFinished)] == ["ok", "ok"]


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_output_compression_is_a_choice_and_keeps_the_pixels(
    tmp_path: Path, compression: str
) -> None:
    from zoodesk.batch.runner import PredictionRequest, RunFinished, run_prediction
    from zoodesk.demo import demo_image_paths, demo_model_path

    sample = demo_image_paths()[0]
    records = {}
    for name in ("zlib", compression):
        request = PredictionRequest(
            model=demo_model_path(), inputs=[sample], output_dir=tmp_path / name,
            device="cpu", compression=name,
        )  # fmt: skip
        [finished] = [e for e in run_prediction(request) if isinstance(e, RunFinished)]
        records[name] = finished.record
    for out in records["zlib"].files[0].outputs:
        with tifffile.TiffFile(tmp_path / "zlib" / out.path) as reference:
            expected = reference.asarray()
            assert reference.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        with tifffile.TiffFile(tmp_path / compression / out.path) as other:
            wanted = {"zstd": tifffile.COMPRESSION.ZSTD, "none": tifffile.COMPRESSION.NONE}
            assert other.pages[0].compression == wanted[compression]
            np.testing.assert_array_equal(other.asarray(), expected)
    assert records[compression].parameters["compression"] == compression


def test_scenes_of_a_multi_scene_file_are_inputs_of_their_own_and_filtered(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    czi = SHARED / "sample-images" / "czi" / "S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi"
    _events, finished = run(request(box2d, [czi], tmp_path / "all", channels=[0]))
    entries = finished.record.files
    assert [(e.series, e.scene, e.key) for e in entries] == [
        (0, "TR1", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm[TR1]"),
        (1, "P1", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm[P1]"),
        (2, "TR2", "S3_1Pos_2Mosaic_T2_Z3_CH2_sm[TR2]"),
    ]
    assert [e.status for e in entries] == ["ok"] * 3
    assert [e.shape for e in entries] == [
        [2, 2, 3, 122, 295],
        [2, 2, 3, 64, 64],
        [2, 2, 3, 237, 352],
    ]
    # A second run into the same folder finds each scene's outputs.
    _events, again = run(request(box2d, [czi], tmp_path / "all", channels=[0]))
    assert [e.status for e in again.record.files] == ["skipped"] * 3

    events, picked = run(request(box2d, [czi], tmp_path / "p", channels=[0], scenes=["p*", "2"]))
    assert [e.scene for e in picked.record.files] == ["P1", "TR2"]
    events, none = run(request(box2d, [czi], tmp_path / "none", scenes=["nothing"]))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert any(
        "no scene matches --scene nothing" in w and "TR1, P1, TR2" in w for w in started.warnings
    )
    assert none.record.files == []


def test_channels_are_chosen_by_the_names_the_file_gives_them(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    czi = SHARED / "sample-images" / "czi" / "CellDivision_T3_Z5_CH2_X240_Y170.czi"
    _events, by_name = run(request(box2d, [czi], tmp_path / "name", channels=["led470"]))
    _events, by_index = run(request(box2d, [czi], tmp_path / "index", channels=[1]))
    assert statuses(by_name) == {czi.name: "ok"}, errors(by_name)
    np.testing.assert_array_equal(
        output_array(tmp_path / "name", by_name.record.files[0].outputs[0].path),
        output_array(tmp_path / "index", by_index.record.files[0].outputs[0].path),
    )
    _events, unknown = run(request(box2d, [czi], tmp_path / "x", channels=["GFP"]))
    message = errors(unknown)[czi.name]
    assert "no channel named 'GFP'" in message and "LED555, LED470" in message


def test_outputs_carry_the_source_objective_microscope_and_time_step(
    tmp_path: Path, box2d: ModelPackage
) -> None:
    from zoodesk.export.ome import ome_xml_of, schema_problems

    czi = SHARED / "sample-images" / "czi" / "CellDivision_T3_Z5_CH2_X240_Y170.czi"
    _events, finished = run(request(box2d, [czi], tmp_path / "out", channels=[0]))
    (entry,) = finished.record.files
    assert entry.status == "ok", entry.error
    xml = ome_xml_of(tmp_path / "out" / entry.outputs[0].path)
    assert xml is not None
    assert schema_problems(xml) == []
    assert 'Model="Plan-Apochromat 50x/1.2"' in xml and 'LensNA="1.2"' in xml
    assert 'Immersion="Water"' in xml and 'NominalMagnification="50"' in xml
    assert '<ObjectiveSettings ID="Objective:0"' in xml
    assert 'TimeIncrement="60.075"' in xml and 'TimeIncrementUnit="s"' in xml
