"""The results page's viewer, driven through its widgets on real runs.

Two runs of box-filter models (see tests/batch_helpers.py) are made once per module:
one over three small OME-TIFFs (two of the same size with a pixel size of 0.65 µm,
one of another size without one), one of a 3D two-channel model over a real CZI
time series (T 3, C 2, Z 5).  Expected values are read from the files with tifffile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PySide6.QtCore import QPoint, QPointF, QSize, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QHeaderView, QWidget

from tests.conftest import SHARED
from zoodesk.gui import _render
from zoodesk.gui.main_window import PAGE_RESULTS, MainWindow
from zoodesk.gui.results import ResultsWidget

CZI = SHARED / "sample-images" / "czi" / "CellDivision_T3_Z5_CH2_X240_Y170.czi"
PIXEL_SIZE = 0.65


def _run(model: Any, inputs: list[Path], output: Path, home: Path) -> Path:
    from zoodesk.batch.runner import PredictionRequest, run_prediction

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOODESK_HOME", str(home))
        request = PredictionRequest(
            model=model, inputs=inputs, output_dir=output, device="cpu", settle_seconds=0.0
        )
        for _event in run_prediction(request):
            pass
    return output / "zoodesk-run.json"


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of a 2D box filter over a_64x80, b_64x80 (0.65 µm pixels) and c_48x96."""
    from tests.batch_helpers import box_package
    from zoodesk.images import write_ome_tiff

    work = tmp_path_factory.mktemp("flat-run")
    inputs = work / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    sized = {"X": (PIXEL_SIZE, "µm"), "Y": (PIXEL_SIZE, "µm")}
    for name, shape, sizes in (("a", (64, 80), sized), ("b", (64, 80), sized), ("c", (48, 96), {})):
        image = rng.integers(0, 4000, shape).astype(np.uint16)
        write_ome_tiff(inputs / f"{name}.ome.tif", image, "YX", pixel_sizes=sizes)
    return _run(box_package(work / "box"), [inputs], work / "out", work / "home")


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of a 3D two-channel box filter over a CZI time series (TCZYX 3 2 5 170 240)."""
    from tests.batch_helpers import box_package

    if not CZI.is_file():
        pytest.fail(f"test data missing: {CZI}")
    work = tmp_path_factory.mktemp("stack-run")
    model = box_package(work / "box3d", ndim=3, channels=2)
    return _run(model, [CZI], work / "out", work / "home")


@pytest.fixture
def results(window: MainWindow) -> Iterator[ResultsWidget]:
    window.show_page(PAGE_RESULTS)
    yield window.results_page


def _open(qtbot: Any, results: ResultsWidget, record: Path) -> None:
    with qtbot.waitSignal(results.image_shown, timeout=30000):
        results.open_record(record)


def _step(qtbot: Any, results: ResultsWidget, action: Any) -> None:
    with qtbot.waitSignal(results.image_shown, timeout=30000):
        action.trigger()


def _key(qtbot: Any, results: ResultsWidget, key: Qt.Key) -> None:
    """Press a key on the picture, as a user would with the viewer focused."""
    results.view.setFocus()
    QTest.keyClick(results.view, key)


def _output_path(record: Path, row: int) -> Path:
    import json

    data = json.loads(record.read_text(encoding="utf-8"))
    return record.parent / data["files"][row]["outputs"][0]["path"]


def test_pixel_readout_shows_position_physical_position_and_values(
    qtbot: Any, results: ResultsWidget, flat_run: Path
) -> None:
    _open(qtbot, results, flat_run)
    viewer = results.viewer
    assert results.output_combo.currentData() == "out"
    source = tifffile.imread(flat_run.parent.parent / "inputs" / "a.ome.tif")
    output = tifffile.imread(_output_path(flat_run, 0))
    y, x = 10, 20
    where = results.view.mapFromScene(QPointF(x + 0.5, y + 0.5))
    QTest.mouseMove(results.view.viewport(), where)
    qtbot.waitUntil(lambda: viewer.readout_label.text() != "")
    assert viewer.readout_label.text() == (
        f"x {x}, y {y} (13 µm, 6.5 µm) · value {int(source[y, x])} · "
        f"out {float(np.squeeze(output)[y, x]):.4g}"
    )
    # With no overlay only the input's value is read out.
    results.output_combo.setCurrentIndex(0)
    assert viewer.readout_label.text() == f"x {x}, y {y} (13 µm, 6.5 µm) · value {source[y, x]}"


def test_zoom_fit_and_one_to_one_and_the_scale_bar(
    qtbot: Any, results: ResultsWidget, flat_run: Path
) -> None:
    _open(qtbot, results, flat_run)
    view, viewer = results.view, results.viewer
    viewport = view.viewport().size()
    fitted = min(viewport.width() / 80, viewport.height() / 64)
    assert view.zoom() == pytest.approx(fitted, rel=0.05)
    assert viewer.zoom_label.text() == f"Zoom {view.zoom() * 100:.0f}%"
    assert view.zoom() > 2  # so that 1:1 below is a change

    qtbot.mouseClick(viewer.actual_button, Qt.MouseButton.LeftButton)
    assert view.zoom() == pytest.approx(1.0)
    assert viewer.zoom_label.text() == "Zoom 100%"
    # At 1:1 the bar may be 110 screen pixels: 71.5 µm, rounded down to 50 µm.
    length, label = view.scale_bar() or (0.0, "")
    assert label == "50 µm" and length == pytest.approx(50 / PIXEL_SIZE)
    _key(qtbot, results, Qt.Key.Key_Plus)
    assert view.zoom() == pytest.approx(1.25)
    assert viewer.zoom_label.text() == "Zoom 125%"
    length, label = view.scale_bar() or (0.0, "")
    assert label == "50 µm" and length == pytest.approx(50 / PIXEL_SIZE * 1.25)

    # The next image has the same size: the zoom is kept.
    _step(qtbot, results, results.action_next)
    assert view.zoom() == pytest.approx(1.25)
    # The third has another size: fitted again; it has no pixel size, so no scale bar.
    _step(qtbot, results, results.action_next)
    assert view.picture_size == (48, 96)
    assert view.is_fitted()
    viewport = view.viewport().size()
    assert view.zoom() == pytest.approx(
        min(viewport.width() / 96, viewport.height() / 48), rel=0.05
    )
    assert view.scale_bar() is None
    _key(qtbot, results, Qt.Key.Key_1)
    assert view.zoom() == pytest.approx(1.0)
    _key(qtbot, results, Qt.Key.Key_F)
    assert view.is_fitted() and view.zoom() > 2


def test_scale_bar_lengths_are_round() -> None:
    assert _render.scale_bar((0.65, "µm"), 1.0, 110) == (pytest.approx(50 / 0.65), "50 µm")
    assert _render.scale_bar((0.1, "µm"), 1.0, 110) == (pytest.approx(100.0), "10 µm")
    assert _render.scale_bar((2.0, "µm"), 0.1, 110) == (pytest.approx(1000.0), "2 mm")
    assert _render.scale_bar((5.0, "nm"), 2.0, 110) == (pytest.approx(40.0), "200 nm")
    assert _render.scale_bar((1.0, "pixel"), 1.0) is None
    assert _render.scale_bar(None, 1.0) is None


def test_overlay_choice_is_kept_from_image_to_image(
    qtbot: Any, results: ResultsWidget, flat_run: Path
) -> None:
    _open(qtbot, results, flat_run)
    combo = results.output_combo
    combo.setCurrentIndex(combo.findData(""))
    _step(qtbot, results, results.action_next)
    assert combo.currentData() == ""
    picture = results.view._item.pixmap().toImage().pixelColor(5, 5)
    assert picture.red() == picture.green() == picture.blue()
    combo.setCurrentIndex(combo.findData("out"))
    _step(qtbot, results, results.action_next)
    assert combo.currentData() == "out"
    # O switches the overlay off and on again.
    _key(qtbot, results, Qt.Key.Key_O)
    assert combo.currentData() == ""
    _key(qtbot, results, Qt.Key.Key_O)
    assert combo.currentData() == "out"


def test_histogram_shows_the_contrast_limits_and_dragging_them_sets_them(
    qtbot: Any, results: ResultsWidget, flat_run: Path
) -> None:
    _open(qtbot, results, flat_run)
    viewer = results.viewer
    histogram = viewer.histogram
    source = tifffile.imread(flat_run.parent.parent / "inputs" / "a.ome.tif")
    # Auto contrast: the 0.5 and 99.5 percentiles of the plane.
    low, high = np.percentile(source, (0.5, 99.5))
    assert results.low_spin.value() == pytest.approx(low, abs=0.01)
    assert results.high_spin.value() == pytest.approx(high, abs=0.01)
    assert histogram.limits == pytest.approx((results.low_spin.value(), results.high_spin.value()))
    assert int(histogram.counts.sum()) == source.size
    assert histogram.edges[0] == source.min() and histogram.edges[-1] == source.max()

    results.high_spin.setValue(3000)
    assert histogram.limits[1] == pytest.approx(3000)
    results.low_spin.setValue(500)
    assert histogram.limits[0] == pytest.approx(500)

    # Drag the high limit to the middle of the range.
    y = histogram.height() // 2
    start = QPoint(round(histogram.x_of(3000)), y)
    middle = (float(source.min()) + float(source.max())) / 2
    end = QPoint(round(histogram.x_of(middle)), y)
    QTest.mousePress(histogram, Qt.MouseButton.LeftButton, pos=start)
    QTest.mouseMove(histogram, end)
    QTest.mouseRelease(histogram, Qt.MouseButton.LeftButton, pos=end)
    step = (histogram.edges[-1] - histogram.edges[0]) / histogram.width()
    assert results.high_spin.value() == pytest.approx(middle, abs=3 * step)
    assert histogram.limits[1] == pytest.approx(results.high_spin.value(), abs=0.01)
    assert results.low_spin.value() == pytest.approx(500)

    qtbot.mouseClick(viewer.auto_button, Qt.MouseButton.LeftButton)
    assert results.high_spin.value() == pytest.approx(high, abs=0.01)
    assert histogram.limits[1] == pytest.approx(high, abs=0.01)


def test_channel_z_and_t_choose_the_plane_shown(
    qtbot: Any, results: ResultsWidget, stack_run: Path
) -> None:
    from zoodesk.images import read_image

    _open(qtbot, results, stack_run)
    viewer = results.viewer
    source = read_image(CZI)
    assert source.axes == "TCZYX"
    pixels = np.asarray(source.array)
    output = tifffile.imread(_output_path(stack_run, 0))
    assert output.shape == (3, 2, 5, 170, 240)

    assert viewer.channel_combo.isVisible() and viewer.z_row.isVisible()
    assert viewer.t_row.isVisible()
    names = [viewer.channel_combo.itemText(i) for i in range(viewer.channel_combo.count())]
    assert names == ["LED555", "LED470"]
    assert (viewer.z_slider.maximum(), viewer.t_slider.maximum()) == (4, 2)
    # The first channel, the middle plane and time point.
    assert viewer.position() == {"C": 0, "Z": 2, "T": 1}
    assert np.array_equal(viewer.content.input, pixels[1, 0, 2])
    assert viewer.z_label.text() == "3 / 5 (0.64 µm)"
    # Each channel of the output is an overlay of its own, at the same T and Z.
    entries = [results.output_combo.itemData(i) for i in range(results.output_combo.count())]
    assert entries[1:] == ["out · o0", "out · o1"]
    assert np.array_equal(viewer.content.outputs["out · o1"][0], output[1, 1, 2])

    with qtbot.waitSignal(results.plane_shown, timeout=30000) as shown:
        viewer.channel_combo.setCurrentIndex(1)
    assert shown.args[0] == {"C": 1, "Z": 2, "T": 1}
    assert np.array_equal(viewer.content.input, pixels[1, 1, 2])

    with qtbot.waitSignal(results.plane_shown, timeout=30000) as shown:
        _key(qtbot, results, Qt.Key.Key_PageDown)
    assert shown.args[0] == {"C": 1, "Z": 3, "T": 1}
    assert np.array_equal(viewer.content.input, pixels[1, 1, 3])
    assert np.array_equal(viewer.content.outputs["out · o0"][0], output[1, 0, 3])
    assert viewer.z_label.text() == "4 / 5 (0.96 µm)"

    with qtbot.waitSignal(results.plane_shown, timeout=30000) as shown:
        _key(qtbot, results, Qt.Key.Key_Period)
    assert shown.args[0] == {"C": 1, "Z": 3, "T": 2}
    assert np.array_equal(viewer.content.input, pixels[2, 1, 3])
    assert np.array_equal(viewer.content.outputs["out · o1"][0], output[2, 1, 3])
    # The picture drawn is of that plane: its grey levels follow the plane's values.
    results.output_combo.setCurrentIndex(0)
    picture = _render.to_rgb(pixels[2, 1, 3], viewer.limits())
    drawn = results.view._item.pixmap().toImage()
    assert drawn.pixelColor(7, 11).red() == picture[11, 7, 0]


def test_two_dimensional_images_show_no_stack_controls(
    qtbot: Any, results: ResultsWidget, flat_run: Path
) -> None:
    _open(qtbot, results, flat_run)
    viewer = results.viewer
    assert not viewer.channel_combo.isVisible()
    assert not viewer.z_row.isVisible() and not viewer.t_row.isVisible()


def _scrolled(widget: QWidget, page: QWidget) -> bool:
    """Whether the widget lies in a scroll area (reached by scrolling, not cut off)."""
    parent = widget.parentWidget()
    while parent is not None and parent is not page:
        if parent.objectName() == "qt_scrollarea_viewport":
            return True
        parent = parent.parentWidget()
    return False


def _clipped(page: QWidget) -> list[str]:
    """The visible widgets of a page smaller than they need, or not inside the page."""
    found = []
    area = page.rect()
    for widget in page.findChildren(QWidget):
        if not widget.isVisibleTo(page) or widget.window() is not page.window():
            continue
        if widget.objectName().startswith("qt_") or isinstance(widget, QHeaderView):
            # Qt's own parts of spin boxes and item views: their owners are checked.
            continue
        hint = widget.minimumSizeHint()
        size = widget.size()
        name = widget.objectName() or type(widget).__name__
        text = getattr(widget, "text", lambda: "")()
        if hint.isValid() and (size.width() < hint.width() or size.height() < hint.height()):
            found.append(f"{name} {text!r}: {size.toTuple()} < {hint.toTuple()}")
        top_left = widget.mapTo(page, QPoint(0, 0))
        inside = area.contains(top_left) and area.contains(
            top_left + QPoint(size.width() - 1, size.height() - 1)
        )
        if not inside and not _scrolled(widget, page):
            found.append(f"{name} {text!r}: outside the page at {top_left.toTuple()}")
    return found


def test_results_page_fits_a_small_window(qtbot: Any, window: MainWindow, stack_run: Path) -> None:
    window.show_page(PAGE_RESULTS)
    results = window.results_page
    _open(qtbot, results, stack_run)
    window.resize(1024, 680)
    qtbot.waitUntil(lambda: window.size() == QSize(1024, 680), timeout=5000)
    QApplication.processEvents()
    assert results.viewer.z_row.isVisible() and results.viewer.channel_combo.isVisible()
    assert results.minimumSizeHint().width() <= results.width()
    assert results.minimumSizeHint().height() <= results.height()
    clipped = _clipped(results)
    assert clipped == [], "\n".join(clipped)


def test_results_page_shows_times_in_local_time(
    qtbot: Any, results: ResultsWidget, flat_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from zoodesk.gui.wording import local_time

    if not hasattr(time, "tzset"):
        pytest.skip("the time zone can be changed for a test only where time.tzset exists")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert local_time("2026-03-01T23:40:05+00:00") == "2026-03-02 05:10"
        _open(qtbot, results, flat_run)
        assert f"started {local_time(results.record.started)}" in results.summary_label.text()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_help_menu_lists_the_shortcuts_and_opens_the_user_guide(
    qtbot: Any, window: MainWindow
) -> None:
    from zoodesk.gui.help_dialogs import ShortcutsDialog, UserGuideDialog, shortcut_text

    help_menu = next(
        a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "Help"
    )
    entries = [a.text().replace("&", "") for a in help_menu.actions()]
    assert "User guide" in entries and "Keyboard shortcuts" in entries

    window.action_shortcuts.trigger()
    dialog = window.findChild(ShortcutsDialog)
    assert dialog is not None and dialog.isVisible()
    listed = {does: keys for keys, does in dialog.listed()}
    assert listed["Fit to window"] == "F"
    assert listed["Actual size (1:1)"] == "1"
    assert listed["Zoom in"] == "+ or ="
    assert listed["Previous Z plane"] == "PgUp or ["
    assert listed["Next time point"] == "."
    assert listed["Next image"] == "Alt+Right"
    assert listed["Open run results"] == "Ctrl+O"
    dialog.reject()

    # The user guide documents every shortcut of the viewer.
    guide_text = (Path(__file__).resolve().parents[2] / "docs" / "gui.md").read_text("utf-8")
    for action in window.results_page.viewer.viewer_actions():
        for key in shortcut_text(action).split(" or "):
            assert f"`{key}`" in guide_text, key

    window.action_user_guide.trigger()
    guide = window.findChild(UserGuideDialog)
    assert guide is not None and guide.isVisible()
    shown = guide.browser.toPlainText()
    assert "The desktop application" in shown and "Keyboard shortcuts" in shown
    guide.reject()
