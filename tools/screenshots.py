"""Take the README's screenshots from the real application, offscreen.

Runs ZooDesk on a temporary data folder holding the zoo catalogue snapshot and the
nuclei model from ``../shared`` (when present), drives it as a user would, and saves:

- ``docs/screenshots/main_window.png``: the model library with a model selected;
- ``docs/screenshots/batch_running.png``: the batch page during a run, with a preview;
- ``docs/screenshots/results.png``: the results of that run: its objects over the
  input, one of them clicked, and the histogram of their areas;
- ``docs/screenshots/viewer.png``: the viewer zoomed in on one of those results, with
  the probability over the input, the scale bar, the plane's histogram with its
  contrast limits and the readout of the pixel under the cursor.

Usage::

    .venv/bin/python tools/screenshots.py [--out docs/screenshots] [--dark]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NUCLEI = SHARED / "zoo-models" / "unet2d_nuclei_broad"
SNAPSHOT = SHARED / "zoo-snapshot"
SIZE = (1360, 860)


def save_screenshot(widget: Any, path: Path) -> None:
    """The widget as a PNG of at most 256 colours: the documents (and the bundle, which
    carries the user guide's pictures) stay small; window chrome, text and the
    pictures shown are still faithful at that depth."""
    from PIL import Image

    raw = path.with_suffix(".raw.png")
    widget.grab().save(str(raw))
    with Image.open(raw) as picture:
        reduced = picture.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    reduced.save(path, optimize=True)
    raw.unlink()


def _prepare_home(home: Path) -> str | None:
    """Fill a fresh data folder: the catalogue snapshot and the nuclei model."""
    from zoodesk.models.cache import ModelCache
    from zoodesk.models.catalogue import INDEX_FILE, catalogue_from_snapshot, save_catalogue
    from zoodesk.settings import load_settings

    settings = load_settings()
    if (SNAPSHOT / INDEX_FILE).is_file():
        catalogue = catalogue_from_snapshot(SNAPSHOT)
        rdfs = {
            e.rdf_file: (SNAPSHOT / e.rdf_file).read_bytes()
            for e in catalogue.entries
            if e.rdf_file
        }
        save_catalogue(
            catalogue, settings.catalogue_dir, (SNAPSHOT / INDEX_FILE).read_bytes(), rdfs
        )
    if (NUCLEI / "bioimageio.yaml").is_file():
        return ModelCache.from_settings(settings).import_package(NUCLEI).key
    return None


def _make_inputs(folder: Path) -> None:
    """A few microscopy-like images large enough for the run to take a while."""
    import numpy as np

    from zoodesk.images import read_image, write_ome_tiff

    folder.mkdir(parents=True, exist_ok=True)
    if (NUCLEI / "test_input.npy").is_file():
        base = np.load(NUCLEI / "test_input.npy")[0, 0]
    else:
        from zoodesk.demo import demo_image_paths

        base = read_image(demo_image_paths()[0]).array.astype(np.float32)
    rng = np.random.default_rng(0)
    for i in range(6):
        tiles = [np.rot90(base, k=(i + j) % 4) for j in range(4)]
        image = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
        image = np.clip(image * (0.8 + 0.1 * i) + rng.normal(0, 0.02, image.shape), 0, None)
        scaled = (image / max(float(image.max()), 1e-6) * 4000).astype(np.uint16)
        write_ome_tiff(
            folder / f"well_B{i + 2:02d}.ome.tif",
            scaled,
            "YX",
            pixel_sizes={"X": (0.65, "µm"), "Y": (0.65, "µm")},
        )


def _wait(
    app: Any, signal: Any, timeout_s: float = 120.0, until: Callable[[], bool] | None = None
) -> None:
    """Run the event loop until ``signal`` fires (and ``until`` holds)."""
    from PySide6.QtCore import QEventLoop, QTimer

    if until is not None and until():
        return
    loop = QEventLoop()

    def check(*_args: Any) -> None:
        if until is None or until():
            loop.quit()

    signal.connect(check)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    loop.exec()
    signal.disconnect(check)
    if not timer.isActive():
        raise TimeoutError(f"waited {timeout_s} s for {signal}")
    timer.stop()


def _settle(app: Any, ms: int = 300) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _click_an_object(results: Any) -> None:
    """Click the middle of the picture's first large object, as a user would."""
    import numpy as np
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest

    content = results.viewer.content
    labels = content.outputs.get("objects", (None, ""))[0] if content else None
    if labels is None:
        return
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    if not len(values):
        return
    label = values[np.argmax(counts > np.median(counts))]
    where = np.argwhere(labels == label)
    y, x = where[len(where) // 2]
    point = results.view.mapFromScene(QPointF(float(x) + 0.5, float(y) + 0.5))
    QTest.mouseClick(results.view.viewport(), Qt.MouseButton.LeftButton, pos=point)


def _show_viewer(app: Any, results: Any) -> None:
    """Zoom in on the probability over the input and point at a nucleus, as a user
    checking the model's output would."""
    import numpy as np
    from PySide6.QtCore import QPointF
    from PySide6.QtTest import QTest

    results.objects_panel.unpin()
    results.viewer.set_highlight("objects", None)
    combo = results.output_combo
    combo.setCurrentIndex(max(combo.findData("probability"), 0))
    results.opacity_slider.setValue(40)
    content = results.viewer.content
    if content is None:
        return
    results.view.actual_size()
    results.view.zoom_in()
    results.view.zoom_in()
    # Point at the brightest pixel of the middle of the picture: a nucleus.
    height, width = content.input.shape[:2]
    middle = content.input[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3]
    y, x = np.unravel_index(int(np.argmax(middle)), middle.shape)
    y, x = int(y) + height // 3, int(x) + width // 3
    results.view.centerOn(QPointF(x, y))
    _settle(app)
    point = results.view.mapFromScene(QPointF(x + 0.5, y + 0.5))
    QTest.mouseMove(results.view.viewport(), point)
    _settle(app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--dark", action="store_true", help="take them in the dark appearance")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="zoodesk-screenshots-"))
    os.environ["ZOODESK_HOME"] = str(work / "home")
    try:
        return _shoot(args.out, work, args.dark)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shoot(out: Path, work: Path, dark: bool) -> int:
    from PySide6.QtWidgets import QApplication

    from zoodesk.gui import _style
    from zoodesk.gui.app import create_main_window
    from zoodesk.gui.main_window import PAGE_BATCH, PAGE_RESULTS
    from zoodesk.gui.services import Services

    nuclei_key = _prepare_home(work / "home")
    inputs = work / "plate-3"
    _make_inputs(inputs)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if dark:
        # The offscreen platform reports no colour scheme: stand in for a dark system.
        _style.is_dark = lambda: True
    _style.apply_appearance(app)
    font = app.font()
    font.setFamily("DejaVu Sans")
    font.setPointSizeF(9.5)
    app.setFont(font)
    out.mkdir(parents=True, exist_ok=True)

    window = create_main_window(Services())
    window.resize(*SIZE)
    window.show()
    library = window.library_page
    _wait(app, library.library_changed)
    wanted = f"cache:{nuclei_key}" if nuclei_key else "builtin:demo"
    library.select_item(wanted)
    _wait(app, library.details_loaded, until=lambda: library._package is not None)
    library.run_test()
    _wait(app, library.test_finished)
    _settle(app)
    save_screenshot(window, out / "main_window.png")

    batch = window.batch_page
    item = library.library.get(wanted) if library.library else None
    if item is not None:
        library.use_model_requested.emit(item)
    _wait(app, batch.model_loaded, until=lambda: batch.package is not None)
    batch.add_inputs([inputs])
    batch.output_edit.setText(str(work / "plate-3-results"))
    _wait(app, batch.scan_finished)
    batch.table.selectRow(1)
    _settle(app, 500)
    batch.run_preview()
    _wait(app, batch.preview_shown)
    window.show_page(PAGE_BATCH)
    done = {"files": 0}

    def count(event: Any) -> None:
        if type(event).__name__ == "FileFinished":
            done["files"] += 1

    # Objects as the model's outputs suggest, so that the results show them.
    batch.objects_box.set_choice("auto")
    batch.start_run()
    # The run starts once the output folder is checked.
    _wait(app, batch.running_changed, until=lambda: batch._run is not None)
    assert batch._run is not None
    batch._run.signals.yielded.connect(count)
    _wait(app, batch._run.signals.yielded, until=lambda: done["files"] >= 2)
    _settle(app, 200)
    save_screenshot(window, out / "batch_running.png")
    _wait(app, batch.running_changed, timeout_s=300, until=lambda: not batch.running)

    results = window.results_page
    window.show_page(PAGE_RESULTS)
    if results.record is None:
        _wait(app, results.record_loaded)
    results.table.selectRow(1)
    _wait(
        app,
        results.image_shown,
        until=lambda: results.current_row() == 1 and results._shown_row == 1,
    )
    results.opacity_slider.setValue(45)
    _wait(app, results.measurements_shown, until=lambda: results.objects_panel.measurements)
    _click_an_object(results)
    _settle(app)
    save_screenshot(window, out / "results.png")
    _show_viewer(app, results)
    save_screenshot(window, out / "viewer.png")
    window.close()
    for name in ("main_window.png", "batch_running.png", "results.png", "viewer.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
