"""The batch page's preview: an overview of the selected image, and the model's output
on a region of it laid over the input.  Nothing is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui import _render
from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.image_view import ImageViewWidget
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.preview import PreviewResult
    from zoodesk.models.package import ModelPackage

#: Largest side of the overview picture of a large image.
OVERVIEW_SIZE = 1024


class PreviewPanelWidget(QWidget):
    """The picture, **Preview**, the output shown over it and its opacity.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs the overview and the preview off the GUI thread.
    """

    #: A preview is shown (the :class:`PreviewResult`).
    preview_shown = Signal(object)
    #: The user dragged a region on the picture to preview it.
    preview_requested = Signal()
    #: A preview ended, shown or not.
    preview_ended = Signal()

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.services = services
        self.runner = runner
        self._preview: PreviewResult | None = None
        self._worker: Worker | None = None
        self._overview_scale = 1
        self._overview_path: Path | None = None
        self._overview_series = 0
        self._region: tuple[int, int, int, int] | None = None

        self.view = ImageViewWidget("Select a file to see it here; drag on it to pick a region.")
        self.view.setObjectName("previewView")
        self.view.set_region_selectable(True)
        # Small enough for the batch page to fit a 1024 x 680 window; the picture is
        # fitted to whatever room there is.
        self.view.setMinimumSize(160, 110)
        self.view.region_selected.connect(self._on_region_selected)
        self.preview_button = QPushButton(icon("preview"), "Preview")
        self.preview_button.setObjectName("previewButton")
        self.output_combo = QComboBox()
        self.output_combo.setToolTip("The model output laid over the image")
        self.output_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.output_combo.setMinimumContentsLength(12)
        self.output_combo.currentIndexChanged.connect(self._on_overlay_changed)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMinimumWidth(60)
        self.opacity_slider.setMaximumWidth(140)
        self.opacity_slider.setToolTip("Opacity of the output over the image")
        self.opacity_slider.valueChanged.connect(self._on_overlay_changed)
        self.preview_label = QLabel("")
        self.preview_label.setObjectName("previewLabel")
        self.preview_label.setWordWrap(True)
        controls = QHBoxLayout()
        controls.addWidget(self.preview_button)
        controls.addWidget(QLabel("Output:"))
        controls.addWidget(self.output_combo, 1)
        controls.addWidget(QLabel("Opacity:"))
        controls.addWidget(self.opacity_slider, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        layout.addWidget(self.preview_label)

    @property
    def busy(self) -> bool:
        """True while the model runs on a region."""
        return self._worker is not None

    def show_file(self, path: Path, series: int, axes: str | None) -> None:
        """Show an overview of one image (one series of a multi-series file)."""
        if (path, series) == (self._overview_path, self._overview_series):
            return
        self._region = None
        self._overview_path, self._overview_series = path, series
        self._preview = None
        self.output_combo.clear()
        self.preview_label.setText("Drag on the image to preview a region, or press Preview.")
        self.runner.start(
            lambda _cancel: (path, series, *_overview(path, series, axes)),
            "overview",
            on_result=self._on_overview_loaded,
            on_error=self._on_overview_failed,
        )

    def run_preview(
        self,
        package: ModelPackage,
        device: str,
        path: Path,
        *,
        series: int,
        axes: str | None,
        channels: list[int] | None,
    ) -> None:
        """Run the model on the image (or the region chosen on it), off the GUI thread."""
        if self._worker is not None:
            self._worker.cancel()
        region = self._region
        self.preview_label.setText(f"Running the model on {path.name}…")
        self._worker = self.runner.start(
            lambda cancel: self.services.preview(
                package,
                device,
                path,
                series=series,
                axes=axes,
                channels=channels,
                region=region,
                cancel=cancel,
            ),
            "preview",
            on_result=self._on_preview_done,
            on_error=self._on_preview_failed,
        )

    def clear(self) -> None:
        """Forget the picture and the preview."""
        self._preview = None
        self._overview_path = None
        self.output_combo.clear()
        self.preview_label.setText("")
        self.view.set_picture(None)

    def _on_overview_loaded(self, result: tuple[Path, int, np.ndarray, int]) -> None:
        path, series, rgb, step = result
        shown = (self._overview_path, self._overview_series)
        if (path, series) != shown or self._preview is not None:
            return
        self._overview_scale = step
        self.view.set_picture(rgb)

    def _on_overview_failed(self, exc: BaseException) -> None:
        self.view.set_picture(None)
        self.view.set_placeholder(readable_message(exc))

    def _on_region_selected(self, y: int, x: int, height: int, width: int) -> None:
        if self._preview is not None:
            # Picture pixels of the previous preview: shift by its region.
            py, px = self._preview.region[:2]
            self._region = (py + y, px + x, height, width)
        else:
            s = self._overview_scale
            self._region = (y * s, x * s, height * s, width * s)
        self.preview_requested.emit()

    def _on_preview_done(self, result: PreviewResult) -> None:
        self._worker = None
        self._preview = result
        self.output_combo.blockSignals(True)
        self.output_combo.clear()
        for out in result.outputs:
            self.output_combo.addItem(f"{out.tensor_id} ({out.kind})", out.tensor_id)
        self.output_combo.blockSignals(False)
        y, x, h, w = result.region
        frame = ", ".join(f"{k}={v}" for k, v in result.frame.items())
        name = self._overview_path.name if self._overview_path else ""
        fed = result.mapping_words or result.mapping
        self.preview_label.setText(
            f"Region y {y}–{y + h}, x {x}–{x + w} of {name}"
            f"{f' ({frame})' if frame else ''}; {fed}; ran on {result.device} in "
            f"{result.seconds:.2f} s. Drag to preview another region."
        )
        self._draw()
        self.preview_ended.emit()
        self.preview_shown.emit(result)

    def _on_preview_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        self._worker = None
        self.preview_ended.emit()
        if isinstance(exc, CancelledError):
            return
        self.preview_label.setText(f"Preview failed: {readable_message(exc)}")
        report_error(self, "Preview failed", exc, self.services.log_file)

    def _on_overlay_changed(self, *_args: Any) -> None:
        self._draw()

    def _draw(self) -> None:
        result = self._preview
        if result is None:
            return
        base_plane = _render.plane(result.image, result.image_axes)
        base = _render.to_rgb(base_plane, _render.auto_limits(base_plane))
        chosen = self.output_combo.currentData()
        out = next((o for o in result.outputs if o.tensor_id == chosen), None)
        if out is not None:
            style = _render.OverlayStyle(opacity=self.opacity_slider.value() / 100)
            base = _render.overlay(base, _render.plane(out.array, out.axes), out.kind, style)
        self.view.set_picture(base)


def _overview(path: Path, series: int, axes: str | None) -> tuple[np.ndarray, int]:
    """Runs on a pool thread: a downsampled picture of the whole image."""
    from zoodesk.images import fold_colour_samples, read_image

    image = fold_colour_samples(read_image(path, series=series, axes=axes))
    picture = _render.plane(image.array, image.axes)
    step = max(1, math.ceil(max(picture.shape[:2]) / OVERVIEW_SIZE))
    small = np.asarray(picture[::step, ::step])
    return _render.to_rgb(small, _render.auto_limits(small)), step
