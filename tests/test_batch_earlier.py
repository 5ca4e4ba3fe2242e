"""A run into a folder that already holds one: what it finds there, and adding to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.batch_helpers import box_filter, box_package, output_array, request, run, statuses
from zoodesk.batch.earlier import find_earlier_run, fresh_folder
from zoodesk.batch.record import RECORD_NAME, RunRecord
from zoodesk.errors import ZooDeskError
from zoodesk.images.axes import map_image_to_tensor
from zoodesk.models.package import ModelPackage


@pytest.fixture(scope="module")
def box2d(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return box_package(tmp_path_factory.mktemp("box2d"))


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """Two folders of images: ``first`` (a, b) and ``second`` (c)."""
    rng = np.random.default_rng(5)
    made = {}
    for folder, names in (("first", ("a.tif", "b.tif")), ("second", ("c.tif",))):
        made[folder] = tmp_path / folder
        made[folder].mkdir()
        for name in names:
            tifffile.imwrite(made[folder] / name, rng.random((24, 32)).astype(np.float32))
    return made


def test_an_empty_folder_or_one_without_finished_inputs_holds_no_earlier_run(
    tmp_path: Path, box2d: ModelPackage, folders: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    assert find_earlier_run(request(box2d, [folders["first"]], out), box2d) is None
    out.mkdir()
    (out / RECORD_NAME).write_text("{not json", encoding="utf-8")
    assert find_earlier_run(request(box2d, [folders["first"]], out), box2d) is None


def test_the_same_inputs_and_set_up_are_a_resume(
    tmp_path: Path, box2d: ModelPackage, folders: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    run(request(box2d, [folders["first"]], out))
    earlier = find_earlier_run(request(box2d, [folders["first"]], out), box2d)
    assert earlier is not None
    assert earlier.model == "box 2d x1"
    assert earlier.done == 2
    assert earlier.same_inputs and earlier.can_add
    assert not earlier.needs_a_choice()


def test_other_inputs_are_told_and_adding_keeps_the_earlier_ones_in_the_record(
    tmp_path: Path, box2d: ModelPackage, folders: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    _events, first = run(request(box2d, [folders["first"]], out))
    new = request(box2d, [folders["second"]], out)
    earlier = find_earlier_run(new, box2d)
    assert earlier is not None
    assert sorted(Path(p).name for p in earlier.left_out) == ["a.tif", "b.tif"]
    assert earlier.can_add
    assert earlier.needs_a_choice() and earlier.needs_a_choice(overwrite=True)

    kept = (out / "a_out.ome.tif").read_bytes()
    _events, added = run(request(box2d, [folders["second"]], out, add_to_earlier=True))
    assert statuses(added) == {"c.tif": "ok", "a.tif": "skipped", "b.tif": "skipped"}
    on_disk = RunRecord.load(out / RECORD_NAME)
    assert sorted(Path(f.input).name for f in on_disk.files) == ["a.tif", "b.tif", "c.tif"]
    carried = {Path(f.input).name: f for f in on_disk.files}
    assert carried["a.tif"].run_id == first.record.run_id
    assert (out / "a_out.ome.tif").read_bytes() == kept
    c_pixels = tifffile.imread(folders["second"] / "c.tif")
    np.testing.assert_allclose(output_array(out, "c_out.ome.tif"), box_filter(c_pixels), atol=1e-6)
    # Now the folder's run covers both folders: running over both is a resume.
    both = request(box2d, [folders["first"], folders["second"]], out)
    again = find_earlier_run(both, box2d)
    assert again is not None and again.same_inputs and not again.needs_a_choice()


def test_another_set_up_is_told_and_cannot_be_added_to(
    tmp_path: Path, box2d: ModelPackage, folders: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    run(request(box2d, [folders["first"]], out))
    tiled = request(box2d, [folders["first"]], out, tile={"y": 16, "x": 16})
    earlier = find_earlier_run(tiled, box2d)
    assert earlier is not None
    assert earlier.same_inputs
    assert earlier.differences == ("tile",)
    assert not earlier.can_add
    assert earlier.needs_a_choice() and not earlier.needs_a_choice(overwrite=True)
    other_inputs = request(box2d, [folders["second"]], out, tile={"y": 16, "x": 16})
    with pytest.raises(ZooDeskError, match="different --tile"):
        run(other_inputs)
    add = request(
        box2d,
        [folders["second"]],
        out,
        tile={"y": 16, "x": 16},
        overwrite=True,
        add_to_earlier=True,
    )
    with pytest.raises(ZooDeskError, match="different --tile"):
        run(add)
    assert sorted(Path(f.input).name for f in RunRecord.load(out / RECORD_NAME).files) == [
        "a.tif",
        "b.tif",
    ]


def test_a_fresh_folder_is_a_sibling_not_taken_yet(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert fresh_folder(tmp_path / "out") == tmp_path / "out-2"
    (tmp_path / "out-2").mkdir()
    (tmp_path / "out-3").write_text("a file", encoding="utf-8")
    assert fresh_folder(tmp_path / "out") == tmp_path / "out-4"


def test_the_axis_mapping_in_words(box2d: ModelPackage) -> None:
    tensor = box2d.spec.inputs[0]
    assert map_image_to_tensor("YX", (24, 32), tensor).in_words() == "Y, X → model's y, x"
    assert map_image_to_tensor("TYX", (5, 24, 32), tensor).in_words() == (
        "Y, X → model's y, x; 5 frames over T, one at a time"
    )
    three = map_image_to_tensor("CYX", (3, 24, 32), tensor, channels=[2])
    assert three.in_words() == "C, Y, X → model's channel, y, x (channel 2)"
