"""Objects in the desktop application: the batch page's options, and on the results page
the label overlay, the counts, the object under the cursor, the histogram and the
remaking of a run's objects, driven through the widgets on a real nuclei run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile
from PySide6.QtCore import QPoint, QPointF, Qt
from scipy import ndimage

from tests.gui.helpers import import_nuclei, table_column, use_model
from tests.objects_helpers import nuclei_images, objects_run
from zoodesk.gui.batch import COL_STATUS
from zoodesk.gui.histogram import BAR_COLOUR
from zoodesk.gui.main_window import PAGE_BATCH, PAGE_RESULTS, MainWindow
from zoodesk.gui.results import COL_OBJECTS, ResultsWidget
from zoodesk.instances import InstanceSettings


@pytest.fixture(scope="module")
def module_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A nuclei run over two images with objects (watershed), made once for the module."""
    base = tmp_path_factory.mktemp("gui-objects")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOODESK_HOME", str(base / "home"))
        nuclei_images(base / "images")
        yield objects_run(
            base / "images",
            base / "run",
            InstanceSettings(method="watershed", source="probability"),
        )


@pytest.fixture
def run_record(module_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of the run (remaking objects changes it)."""
    shutil.copytree(module_run.parent, tmp_path / "run")
    return tmp_path / "run" / module_run.name


def _record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _picture(results: ResultsWidget) -> np.ndarray:
    """The pixels the results view shows, as an (H, W, 3) array."""
    image = results.view._item.pixmap().toImage()
    image = image.convertToFormat(image.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    return np.array(
        data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3)
    )


def _open(window: MainWindow, qtbot: Any, run_record: Path) -> ResultsWidget:
    results = window.results_page
    window.show_page(PAGE_RESULTS)
    with (
        qtbot.waitSignal(results.image_shown, timeout=30000),
        qtbot.waitSignal(results.measurements_shown, timeout=30000),
    ):
        results.open_record(run_record)
    return results


def _viewport_point(results: ResultsWidget, y: int, x: int) -> QPoint:
    """Where the centre of picture pixel (y, x) is on the view's viewport."""
    return results.view.mapFromScene(QPointF(x + 0.5, y + 0.5))


def _labels(run_record: Path, index: int = 0) -> np.ndarray:
    entry = _record(run_record)["files"][index]
    return tifffile.imread(run_record.parent / entry["instances"]["labels"])


def _inner_and_edge(labels: np.ndarray, label: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """A pixel of the object whose four neighbours are in it too, and one on its edge."""
    inside = labels == label
    padded = np.pad(inside, 1)
    core = inside & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    inner = tuple(int(v) for v in np.argwhere(core)[len(np.argwhere(core)) // 2])
    edge = tuple(int(v) for v in np.argwhere(inside & ~core)[0])
    return (inner[0], inner[1]), (edge[0], edge[1])


def test_batch_objects_options_reach_the_run_record(
    window: MainWindow, qtbot: Any, tmp_path: Path, nuclei_dir: Path, monkeypatch: Any
) -> None:
    batch = window.batch_page
    item_id = import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    use_model(qtbot, window, item_id)
    window.show_page(PAGE_BATCH)
    box = batch.objects_box
    tabs = [batch.side_tabs.tabText(i) for i in range(batch.side_tabs.count())]
    assert tabs == ["Preview", "Problems", "Objects"]
    batch.side_tabs.setCurrentIndex(2)
    assert box.isVisible() and box.choice() is None

    # Automatic: the proposal for this model, and why.
    box.method_combo.setCurrentIndex(box.method_combo.findData("auto"))
    assert box.proposal_label.isVisible()
    proposal = box.proposal_label.text()
    assert "watershed" in proposal and "probability map" in proposal
    assert batch.side_tabs.tabText(2) == "Objects (auto: watershed)"
    # StarDist is listed, but says it cannot run here.
    stardist = box.method_combo.model().item(box.method_combo.findData("stardist"))
    assert not stardist.isEnabled() and "stardist" in stardist.toolTip()

    # Invalid choices are named by their control, and the run cannot start.
    images = tmp_path / "images"
    nuclei_images(images)
    output = tmp_path / "out"
    with qtbot.waitSignal(batch.scan_finished, timeout=60000):
        batch.add_inputs([images])
    batch.output_edit.setText(str(output))
    assert batch.start_button.isEnabled()
    box.method_combo.setCurrentIndex(box.method_combo.findData("threshold"))
    box.threshold_combo.setCurrentIndex(box.threshold_combo.findData("model"))
    assert box.problem_label.isVisible()
    assert box.problem_label.text().startswith("Threshold: ")
    assert "no binarize step of its own" in box.problem_label.text()
    assert "--" not in box.problem_label.text()
    assert not batch.start_button.isEnabled()
    box.threshold_combo.setCurrentIndex(box.threshold_combo.findData("value"))
    box.threshold_spin.setValue(0.4)
    box.min_size_spin.setValue(30)
    box.max_size_spin.setValue(20)
    assert box.problem() == "Maximum size: maximum size 20 is below the minimum size 30"
    assert not batch.start_button.isEnabled()
    box.max_size_spin.setValue(5000)
    assert box.problem() is None and batch.start_button.isEnabled()
    box.method_combo.setCurrentIndex(box.method_combo.findData("boundary"))
    assert box.problem() is not None and box.problem().startswith("Method: ")
    box.method_combo.setCurrentIndex(box.method_combo.findData("watershed"))
    assert box.min_distance_spin.isVisible()
    box.min_distance_spin.setValue(7)
    box.fill_holes_check.setChecked(True)
    assert batch.side_tabs.tabText(2) == "Objects (watershed)"

    with qtbot.waitSignal(batch.run_finished, timeout=180000):
        qtbot.mouseClick(batch.start_button, Qt.MouseButton.LeftButton)
    record = _record(output / "zoodesk-run.json")
    assert record["parameters"]["instances"] == {
        "method": "watershed",
        "source": "probability",
        "channel": 0,
        "boundary_channel": None,
        "threshold": 0.4,
        "boundary_threshold": 0.5,
        "min_size": 30,
        "max_size": 5000,
        "fill_holes": True,
        "min_distance": 7,
        "block": 1024,
    }
    for entry in record["files"]:
        table = pd.read_csv(output / entry["instances"]["objects"])
        assert len(table) == entry["instances"]["count"] > 0
        assert table["area_px"].between(30, 5000).all()
    # Each file's count is in its status.
    assert table_column(batch.table, COL_STATUS) == [
        f"done · {f['instances']['count']} objects" for f in record["files"]
    ]
    qtbot.waitUntil(lambda: not batch.running)


def test_results_show_counts_the_object_under_the_cursor_and_a_histogram(
    window: MainWindow, qtbot: Any, run_record: Path
) -> None:
    results = _open(window, qtbot, run_record)
    files = _record(run_record)["files"]
    assert table_column(results.table, COL_OBJECTS) == [str(f["instances"]["count"]) for f in files]
    assert table_column(results.table, 2) == ["probability, objects"] * 2
    assert results.output_combo.currentData() == "objects"
    assert f"{sum(f['instances']['count'] for f in files)} objects in 2 image(s)" in (
        results.summary_label.text()
    )

    # The object under the cursor: its label and measurements, from objects.csv.
    labels = _labels(run_record)
    table = pd.read_csv(run_record.parent / files[0]["instances"]["objects"])
    big = table.loc[table["area_px"].idxmax()]
    label = int(big["label"])
    (y, x), _edge = _inner_and_edge(labels, label)
    panel = results.objects_panel
    qtbot.mouseMove(results.view.viewport(), _viewport_point(results, y, x))
    qtbot.waitUntil(lambda: panel.object_label.text().startswith(f"Object {label}:"))
    assert f"area_px {int(big['area_px'])}" in panel.object_label.text()
    shown = panel.table_values()
    assert shown["label"] == str(label)
    assert shown["area_px"] == str(int(big["area_px"]))
    assert float(shown["area_um2"]) == pytest.approx(big["area_um2"], rel=1e-3)

    # A click keeps that object while the cursor moves over the background.
    qtbot.mouseClick(
        results.view.viewport(), Qt.MouseButton.LeftButton, pos=_viewport_point(results, y, x)
    )
    assert panel.pinned == (label, 0)
    assert panel.object_box.title() == f"Object {label} (clicked)"
    by, bx = (int(v) for v in np.argwhere(labels == 0)[0])
    qtbot.mouseMove(results.view.viewport(), _viewport_point(results, by, bx))
    qtbot.waitUntil(lambda: "is kept" in panel.object_label.text())
    assert panel.table_values()["label"] == str(label)
    # Another object, clicked, replaces it.
    other = table.loc[table["area_px"].idxmin()]
    (oy, ox), _ = _inner_and_edge(labels, int(other["label"]))
    qtbot.mouseClick(
        results.view.viewport(), Qt.MouseButton.LeftButton, pos=_viewport_point(results, oy, ox)
    )
    assert panel.pinned == (int(other["label"]), 0)
    assert panel.table_values()["area_px"] == str(int(other["area_px"]))

    # The histogram of one measurement over every object of the run.
    every = pd.concat(
        [pd.read_csv(run_record.parent / f["instances"]["objects"]) for f in files],
        ignore_index=True,
    )
    assert panel.column_combo.currentData() == "area_px"
    expected, edges = np.histogram(every["area_px"], bins=20)
    assert panel.histogram.counts.tolist() == expected.tolist()
    np.testing.assert_allclose(panel.histogram.edges, edges)
    panel.column_combo.setCurrentIndex(panel.column_combo.findData("mean_intensity_c0"))
    panel.bins_spin.setValue(8)
    expected, _ = np.histogram(every["mean_intensity_c0"], bins=8)
    assert panel.histogram.counts.tolist() == expected.tolist()
    # It is drawn: the tallest bar's middle is in the bar colour.
    drawn = panel.histogram.grab().toImage()
    colours = {
        drawn.pixelColor(px, py).rgb()
        for px in range(drawn.width())
        for py in range(0, drawn.height(), 4)
    }
    assert BAR_COLOUR.rgb() in colours


def test_overlay_opacity_and_outlines_change_the_picture(
    window: MainWindow, qtbot: Any, run_record: Path
) -> None:
    results = _open(window, qtbot, run_record)
    labels = _labels(run_record)
    table = pd.read_csv(run_record.parent / _record(run_record)["files"][0]["instances"]["objects"])
    label = int(table.loc[table["area_px"].idxmax(), "label"])
    (iy, ix), (ey, ex) = _inner_and_edge(labels, label)
    by, bx = (int(v) for v in np.argwhere(labels == 0)[0])
    assert results.view.picture_size == labels.shape

    results.opacity_slider.setValue(0)
    plain = _picture(results)
    # The input alone is grey.
    assert np.array_equal(plain[..., 0], plain[..., 1])
    results.opacity_slider.setValue(100)
    full = _picture(results)
    # Each object in its colour, the background untouched.
    assert full[iy, ix].tolist() != plain[iy, ix].tolist()
    assert full[iy, ix].tolist() == full[ey, ex].tolist()
    assert full[by, bx].tolist() == plain[by, bx].tolist()
    results.opacity_slider.setValue(50)
    half = _picture(results)
    assert not np.array_equal(half[iy, ix], full[iy, ix])
    assert not np.array_equal(half[iy, ix], plain[iy, ix])

    results.opacity_slider.setValue(100)
    results.outlines_check.setChecked(True)
    outlined = _picture(results)
    # Only the edges are drawn: inside, the input shows again.
    assert outlined[iy, ix].tolist() == plain[iy, ix].tolist()
    assert outlined[ey, ex].tolist() == full[ey, ex].tolist()
    assert outlined[by, bx].tolist() == plain[by, bx].tolist()
    results.labels_check.setChecked(False)
    single = _picture(results)
    assert single[ey, ex].tolist() == [255, 0, 200]


def test_remaking_objects_with_another_method_updates_the_counts(
    window: MainWindow, qtbot: Any, run_record: Path
) -> None:
    from zoodesk.gui.remeasure_dialog import RemeasureDialog

    results = _open(window, qtbot, run_record)
    before = [f["instances"]["count"] for f in _record(run_record)["files"]]
    assert results.objects_panel.remeasure_button.isEnabled()
    qtbot.mouseClick(results.objects_panel.remeasure_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(RemeasureDialog)
    assert dialog is not None and dialog.isVisible()
    # The run's own settings come first.
    assert dialog.options.method_combo.currentData() == "watershed"
    assert dialog.options.method_combo.findData("none") < 0
    qtbot.waitUntil(lambda: dialog.model_label.text().startswith("Model: "), timeout=60000)
    dialog.options.method_combo.setCurrentIndex(dialog.options.method_combo.findData("threshold"))
    dialog.options.threshold_combo.setCurrentIndex(0)
    dialog.options.threshold_spin.setValue(0.5)
    with (
        qtbot.waitSignal(dialog.measured, timeout=120000),
        qtbot.waitSignal(results.image_shown, timeout=120000),
    ):
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)

    # Threshold alone: the connected regions of the probability above 0.5.
    record = _record(run_record)
    expected = []
    for entry in record["files"]:
        out = next(o for o in entry["outputs"] if o["kind"] == "probabilities")
        probability = tifffile.imread(run_record.parent / out["path"])
        expected.append(ndimage.label(probability.reshape(probability.shape[-2:]) > 0.5)[1])
    assert expected != before
    assert [f["instances"]["count"] for f in record["files"]] == expected
    assert record["parameters"]["instances"]["method"] == "threshold"
    assert table_column(results.table, COL_OBJECTS) == [str(n) for n in expected]
    assert dialog.status_label.text() == f"Done: {sum(expected)} objects in 2 image(s)."
    qtbot.waitUntil(lambda: results.objects_panel.measurements is not None, timeout=30000)
    assert int(results.objects_panel.histogram.counts.sum()) == sum(expected)
    dialog.accept()


def test_remaking_objects_can_be_cancelled(
    window: MainWindow, qtbot: Any, run_record: Path
) -> None:
    from zoodesk.gui.remeasure_dialog import RemeasureDialog

    results = _open(window, qtbot, run_record)
    before = _record(run_record)
    qtbot.mouseClick(results.objects_panel.remeasure_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(RemeasureDialog)
    assert dialog is not None
    dialog.options.method_combo.setCurrentIndex(dialog.options.method_combo.findData("threshold"))

    def cancel_after_first(value: int) -> None:
        if value == 1:
            qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)

    dialog.progress.valueChanged.connect(cancel_after_first)
    with qtbot.waitSignal(dialog.measured, timeout=120000):
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.status_label.text() == (
        "Cancelled: 1 of 2 image(s) remade; the others keep their earlier objects."
    )
    qtbot.waitUntil(lambda: not dialog.running)
    assert dialog.start_button.isEnabled() and dialog.close_button.isEnabled()
    after = _record(run_record)
    assert after["files"][0]["instances"]["settings"]["method"] == "threshold"
    assert after["files"][1]["instances"] == before["files"][1]["instances"]
    assert after["parameters"]["instances"]["method"] == "watershed"
    dialog.accept()


def test_objects_options_follow_the_models_outputs(qtbot: Any, services: Any) -> None:
    from tests.conftest import SHARED
    from zoodesk.gui.objects_options import ObjectOptionsWidget
    from zoodesk.models.package import load_model_package

    models = SHARED / "zoo-models"
    box = ObjectOptionsWidget(services)
    qtbot.addWidget(box)
    box.show()

    # StarDist's 33 channels: proposed, but not available here.
    stardist = models / "stardist_example_model" / "v0_4.bioimageio.yaml"
    box.set_spec(load_model_package(stardist).spec)
    box.set_choice("auto")
    assert "StarDist" in box.proposal_label.text()
    assert box.problem() is not None and box.problem().startswith("Method: StarDist")
    box.set_choice("threshold")
    assert box.problem() is None
    assert not box.form.isRowVisible(box.output_combo)  # one output: nothing to choose
    assert box.form.isRowVisible(box.channel_combo) and box.channel_combo.count() == 33
    assert not box.form.isRowVisible(box.boundary_combo)
    box.set_choice("boundary")
    assert box.form.isRowVisible(box.boundary_combo)
    assert (box.channel_combo.currentData(), box.boundary_combo.currentData()) == (0, 1)
    assert box.problem() is None
    box.boundary_combo.setCurrentIndex(box.boundary_combo.findData(0))
    assert box.problem() == (
        "Boundary channel: the boundary channel is the foreground channel (0): choose another"
    )
    assert box.overrides()["boundary_channel"] == 0

    # Two outputs, neither a probability: the output is chosen, nothing is proposed.
    box.set_spec(load_model_package(models / "unet2d_multi_tensor" / "bioimageio.yaml").spec)
    assert box.form.isRowVisible(box.output_combo)
    assert [box.output_combo.itemData(i) for i in range(box.output_combo.count())] == [
        "output0",
        "output1",
    ]
    assert not box.form.isRowVisible(box.channel_combo)
    box.output_combo.setCurrentIndex(1)
    box.set_choice("threshold")
    assert box.resolved().source == "output1"
    box.set_choice("auto")
    assert box.proposal_label.text().startswith("Nothing to propose: no output")
    assert box.problem() is not None and box.problem().startswith("Method: cannot propose")
