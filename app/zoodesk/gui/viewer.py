"""The image viewer of the results page: an input with an output laid over it.

What Fiji and napari users expect of a viewer: the pixel under the cursor (its
position in pixels and physical units, and its values), a scale bar, the histogram
of the plane with its contrast limits, fit and 1:1 zoom with the zoom shown, and a
channel selector with Z and T sliders for stacks and time series.  The widget only
shows planes it is given (:class:`ViewerContent`); the page that owns it reads them
off the GUI thread when :attr:`ViewerWidget.position_changed` asks for another plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui import _render
from zoodesk.gui.histogram import HistogramWidget
from zoodesk.gui.image_view import ImageViewWidget

#: The axes the viewer steps through, besides the picture's Y and X.
STEP_AXES = "CZT"


@dataclass
class ViewerContent:
    """One input's planes at one position, with what the viewer needs to show them.

    Attributes
    ----------
    input
        The input's plane: ``(H, W)``, or ``(H, W, 3)`` for RGB.
    outputs
        Overlay entries: key -> (the output's plane at the same position, its kind).
    names
        Key -> the entry's text in the overlay list.
    sizes
        The input's length along each of C, Z and T that it has.
    position
        The index shown along each axis of :attr:`sizes`.
    channel_names
        The input's channel names, or None.
    pixel_sizes
        The input's physical pixel sizes (``{"X": (0.65, "µm"), ...}``).
    preferred
        The overlay entry shown when the user has not chosen one.
    """

    input: np.ndarray
    outputs: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)
    channel_names: list[str] | None = None
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    preferred: str | None = None


def _step_shortcut(action: QAction, *keys: str) -> None:
    action.setShortcuts([QKeySequence(k) for k in keys])


class ViewerWidget(QWidget):
    """The picture of an input and an output over it, with its controls.

    Parameters
    ----------
    placeholder
        The text shown while there is no picture.
    """

    #: The user moved to another channel, Z plane or time point (the new position,
    #: ``{"C": 0, "Z": 3, ...}``): the owner reads the planes there and shows them.
    position_changed = Signal(object)
    #: The cursor is over picture pixel (y, x); (-1, -1) once it leaves the picture.
    pixel_hovered = Signal(int, int)
    #: Picture pixel (y, x) was clicked.
    pixel_clicked = Signal(int, int)
    #: A picture was drawn (after any change of what is shown).
    drawn = Signal()

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("viewer")
        self.content: ViewerContent | None = None
        #: The overlay the user chose ("" for none); None until they choose.
        self.overlay_choice: str | None = None
        self._limits_by_channel: dict[int, tuple[float, float]] = {}
        self._highlight: tuple[str, int] | None = None
        self._hovered = (-1, -1)
        self._filling = False
        self._last_overlay = 1
        self._build_actions()
        self._build_ui(placeholder)

    # ----------------------------------------------------------------- building

    def _build_actions(self) -> None:
        def action(text: str, slot: Any, *keys: str) -> QAction:
            found = QAction(text, self)
            _step_shortcut(found, *keys)
            found.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            found.triggered.connect(slot)
            self.addAction(found)
            return found

        self.action_fit = action("Fit to window", self._on_fit_triggered, "F")
        self.action_actual_size = action("Actual size (1:1)", self._on_actual_triggered, "1")
        self.action_zoom_in = action("Zoom in", self._on_zoom_in_triggered, "+", "=")
        self.action_zoom_out = action("Zoom out", self._on_zoom_out_triggered, "-")
        self.action_previous_z = action(
            "Previous Z plane", lambda: self._step("Z", -1), "PgUp", "["
        )
        self.action_next_z = action("Next Z plane", lambda: self._step("Z", 1), "PgDown", "]")
        self.action_previous_t = action("Previous time point", lambda: self._step("T", -1), ",")
        self.action_next_t = action("Next time point", lambda: self._step("T", 1), ".")
        self.action_next_channel = action("Next channel", lambda: self._step("C", 1), "C")
        self.action_auto_contrast = action("Auto contrast", self._on_auto_clicked, "A")
        self.action_no_overlay = action("Overlay on / off", self._on_toggle_overlay, "O")

    def viewer_actions(self) -> list[QAction]:
        """The viewer's actions with keyboard shortcuts, in the order to list them."""
        return [
            self.action_fit,
            self.action_actual_size,
            self.action_zoom_in,
            self.action_zoom_out,
            self.action_previous_z,
            self.action_next_z,
            self.action_previous_t,
            self.action_next_t,
            self.action_next_channel,
            self.action_auto_contrast,
            self.action_no_overlay,
        ]

    def _build_ui(self, placeholder: str) -> None:
        self.view = ImageViewWidget(placeholder)
        self.view.setObjectName("resultsView")
        self.view.pixel_hovered.connect(self._on_pixel_hovered)
        self.view.pixel_clicked.connect(self.pixel_clicked)
        self.view.zoom_changed.connect(self._on_zoom_changed)

        self.readout_label = QLabel("")
        self.readout_label.setObjectName("pixelReadout")
        self.readout_label.setWordWrap(True)
        self.readout_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout_label.setToolTip("The pixel under the cursor: position and values")

        # Navigation: zoom, channel, Z and T.
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the picture to the window (F)")
        self.fit_button.clicked.connect(self.action_fit.trigger)
        self.actual_button = QPushButton("1:1")
        self.actual_button.setToolTip("One screen pixel per image pixel (1)")
        self.actual_button.clicked.connect(self.action_actual_size.trigger)
        for button in (self.fit_button, self.actual_button):
            button.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.zoom_label = QLabel("")
        self.zoom_label.setObjectName("zoomLabel")
        self.zoom_label.setToolTip("Zoom: + and - (or the wheel) zoom in and out")
        self.channel_label = QLabel("Channel:")
        self.channel_combo = QComboBox()
        self.channel_combo.setObjectName("channelCombo")
        self.channel_combo.setToolTip("The input's channel shown (C: next channel)")
        self.channel_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.channel_combo.setMinimumContentsLength(8)
        self.channel_combo.currentIndexChanged.connect(self._on_position_edited)
        self.z_slider, self.z_label, self.z_row = self._stack_slider(
            "Z", "Z plane (PageUp / PageDown)"
        )
        self.t_slider, self.t_label, self.t_row = self._stack_slider("T", "Time point (, and .)")

        # The overlay.
        self.output_combo = QComboBox()
        self.output_combo.setObjectName("resultsOutput")
        self.output_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.output_combo.setMinimumContentsLength(14)
        self.output_combo.setToolTip("The output laid over the input (O: on / off)")
        self.output_combo.currentIndexChanged.connect(self._on_overlay_changed)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setObjectName("opacitySlider")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMinimumWidth(70)
        self.opacity_slider.setMaximumWidth(140)
        self.opacity_slider.valueChanged.connect(self._on_display_changed)
        self.labels_check = QCheckBox("Colour labels")
        self.labels_check.setObjectName("colourLabelsCheck")
        self.labels_check.setChecked(True)
        self.labels_check.setToolTip("One colour per label (off: one colour for every object)")
        self.labels_check.toggled.connect(self._on_display_changed)
        self.outlines_check = QCheckBox("Outlines")
        self.outlines_check.setObjectName("outlinesCheck")
        self.outlines_check.setToolTip("Labels and objects: draw only their edges")
        self.outlines_check.toggled.connect(self._on_display_changed)

        # Contrast: the histogram with the limits, and the limits as numbers.
        self.histogram = HistogramWidget(noun="pixels", log_counts=True)
        self.histogram.setObjectName("planeHistogram")
        self.histogram.setMinimumSize(140, 64)
        self.histogram.limits_draggable = True
        self.histogram.setToolTip(
            "Histogram of the plane shown (counts on a log scale); drag the orange "
            "lines to change the contrast"
        )
        self.histogram.limits_dragged.connect(self._on_limits_dragged)
        self.histogram.clear("No image.")
        self.low_spin = QDoubleSpinBox()
        self.low_spin.setObjectName("contrastLow")
        self.low_spin.setToolTip("Contrast: the input value shown black")
        self.high_spin = QDoubleSpinBox()
        self.high_spin.setObjectName("contrastHigh")
        self.high_spin.setToolTip("Contrast: the input value shown white")
        for spin in (self.low_spin, self.high_spin):
            spin.setRange(-1e12, 1e12)
            spin.setDecimals(2)
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._on_limits_edited)
        self.auto_button = QPushButton("Auto")
        self.auto_button.setToolTip("Contrast from the 0.5 and 99.5 percentiles of the plane (A)")
        self.auto_button.clicked.connect(self._on_auto_clicked)

        self.image_label = QLabel("")
        self.image_label.setObjectName("imageLabel")
        self.image_label.setWordWrap(True)

        navigation = QHBoxLayout()
        self.navigation_layout = navigation
        navigation.addWidget(self.fit_button)
        navigation.addWidget(self.actual_button)
        navigation.addWidget(self.zoom_label)
        navigation.addStretch(1)
        navigation.addWidget(self.channel_label)
        navigation.addWidget(self.channel_combo)

        overlay = QGridLayout()
        overlay.addWidget(QLabel("Overlay:"), 0, 0)
        overlay.addWidget(self.output_combo, 0, 1)
        overlay.addWidget(QLabel("Opacity:"), 0, 2)
        overlay.addWidget(self.opacity_slider, 0, 3)
        checks = QHBoxLayout()
        checks.addWidget(self.labels_check)
        checks.addWidget(self.outlines_check)
        checks.addStretch(1)
        overlay.addLayout(checks, 1, 1, 1, 3)
        overlay.setColumnStretch(1, 1)

        limits = QGridLayout()
        limits.addWidget(QLabel("Contrast:"), 0, 0, 1, 2)
        limits.addWidget(QLabel("low"), 1, 0)
        limits.addWidget(self.low_spin, 1, 1)
        limits.addWidget(QLabel("high"), 2, 0)
        limits.addWidget(self.high_spin, 2, 1)
        limits.addWidget(self.auto_button, 3, 1)
        contrast = QHBoxLayout()
        contrast.addWidget(self.histogram, 1)
        contrast.addLayout(limits)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.readout_label)
        layout.addLayout(navigation)
        layout.addWidget(self.z_row)
        layout.addWidget(self.t_row)
        layout.addLayout(overlay)
        layout.addLayout(contrast)
        layout.addWidget(self.image_label)
        self._show_navigation({})

    def _stack_slider(self, letter: str, tip: str) -> tuple[QSlider, QLabel, QWidget]:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setObjectName(f"{letter.lower()}Slider")
        slider.setToolTip(tip)
        slider.setPageStep(1)
        slider.valueChanged.connect(self._on_position_edited)
        label = QLabel("")
        label.setObjectName(f"{letter.lower()}Label")
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(QLabel(f"{letter}:"))
        line.addWidget(slider, 1)
        line.addWidget(label)
        return slider, label, row

    # ---------------------------------------------------------------- showing

    def clear(self, text: str = "") -> None:
        """Show no picture (and ``text`` under it)."""
        self.content = None
        self.view.set_picture(None)
        self.view.set_pixel_size(None)
        self.histogram.clear("No image.")
        self.image_label.setText(text)
        self.readout_label.setText("")

    def show_content(self, content: ViewerContent, *, new_image: bool) -> None:
        """Show an input's planes; ``new_image`` is False when only the position changed
        (the contrast is kept then, as in Fiji)."""
        previous = self.content
        self.content = content
        if new_image:
            self._limits_by_channel.clear()
            self._highlight = None
        self._filling = True
        try:
            self._show_navigation(content.sizes)
            self._set_position(content.position)
            self._fill_overlays(content)
        finally:
            self._filling = False
        channel = content.position.get("C", 0)
        limits = self._limits_by_channel.get(channel)
        if limits is None or previous is None:
            limits = _render.auto_limits(content.input)
        self._set_limits(limits)
        counts, edges = _render.plane_histogram(content.input)
        self.histogram.set_histogram(counts, edges, "")
        self.histogram.set_limits(self.limits())
        self.view.set_pixel_size(content.pixel_sizes.get("X"))
        self._update_stack_labels()
        self.draw()
        self._show_readout()

    def _show_navigation(self, sizes: dict[str, int]) -> None:
        channels = sizes.get("C", 1)
        self.channel_label.setVisible(channels > 1)
        self.channel_combo.setVisible(channels > 1)
        self.z_row.setVisible(sizes.get("Z", 1) > 1)
        self.t_row.setVisible(sizes.get("T", 1) > 1)

    def _set_position(self, position: dict[str, int]) -> None:
        content = self.content
        assert content is not None
        names = content.channel_names or []
        channels = content.sizes.get("C", 1)
        wanted = [
            names[i] if i < len(names) and names[i] else f"Channel {i + 1}" for i in range(channels)
        ]
        if [self.channel_combo.itemText(i) for i in range(self.channel_combo.count())] != wanted:
            self.channel_combo.clear()
            self.channel_combo.addItems(wanted)
        self.channel_combo.setCurrentIndex(position.get("C", 0))
        for letter, slider in (("Z", self.z_slider), ("T", self.t_slider)):
            slider.setRange(0, max(content.sizes.get(letter, 1) - 1, 0))
            slider.setValue(position.get(letter, 0))

    def _update_stack_labels(self) -> None:
        content = self.content
        if content is None:
            return
        for letter, slider, label in (
            ("Z", self.z_slider, self.z_label),
            ("T", self.t_slider, self.t_label),
        ):
            text = f"{slider.value() + 1} / {content.sizes.get(letter, 1)}"
            if letter == "Z":
                depth = _render.physical_text(slider.value(), content.pixel_sizes.get("Z"))
                text += f" ({depth})" if depth else ""
            label.setText(text)

    def _fill_overlays(self, content: ViewerContent) -> None:
        combo = self.output_combo
        combo.clear()
        combo.addItem("none (input only)", "")
        for key in content.outputs:
            combo.addItem(content.names.get(key, key), key)
        choice = self.overlay_choice
        index = combo.findData(choice) if choice is not None else -1
        if index < 0 and content.preferred:
            index = combo.findData(content.preferred)
        if index < 0:
            index = min(1, len(content.outputs))
        combo.setCurrentIndex(index)

    def position(self) -> dict[str, int]:
        """The channel, Z plane and time point shown (those the input has)."""
        if self.content is None:
            return {}
        sizes = self.content.sizes
        found = {
            "C": self.channel_combo.currentIndex(),
            "Z": self.z_slider.value(),
            "T": self.t_slider.value(),
        }
        return {k: max(v, 0) for k, v in found.items() if k in sizes}

    def limits(self) -> tuple[float, float]:
        """The contrast limits of the input (low < high)."""
        low, high = self.low_spin.value(), self.high_spin.value()
        return (low, high) if high > low else (low, low + 1)

    def _set_limits(self, limits: tuple[float, float]) -> None:
        low, high = limits
        decimals = 4 if abs(high - low) < 10 else 2
        for spin, value in ((self.low_spin, low), (self.high_spin, high)):
            spin.blockSignals(True)
            spin.setDecimals(decimals)
            spin.setValue(value)
            spin.blockSignals(False)
        if self.content is not None:
            self._limits_by_channel[self.content.position.get("C", 0)] = self.limits()

    def set_highlight(self, key: str, label: int | None) -> None:
        """Outline object ``label`` of overlay entry ``key`` in white (None: no object)."""
        self._highlight = None if label is None else (key, label)
        self.draw()

    def draw(self) -> None:
        """Draw the picture from the planes and the controls."""
        content = self.content
        if content is None:
            self.view.set_picture(None)
            return
        picture = _render.to_rgb(content.input, self.limits())
        chosen = self.output_combo.currentData()
        if chosen and chosen in content.outputs:
            plane, kind = content.outputs[chosen]
            style = _render.OverlayStyle(
                opacity=self.opacity_slider.value() / 100,
                colour_labels=self.labels_check.isChecked(),
                outlines=self.outlines_check.isChecked(),
            )
            picture = _render.overlay(picture, plane, kind, style)
        if self._highlight is not None and self._highlight[0] in content.outputs:
            key, label = self._highlight
            picture = _render.highlight(picture, content.outputs[key][0], label)
        self.view.set_picture(picture)
        self.drawn.emit()

    # ---------------------------------------------------------------- readout

    def readout_at(self, y: int, x: int) -> str:
        """The readout for picture pixel (y, x): position, physical position, values."""
        content = self.content
        if content is None or y < 0:
            return ""
        sizes = content.pixel_sizes
        parts = [f"x {x}, y {y}"]
        physical = [
            _render.physical_text(x, sizes.get("X")),
            _render.physical_text(y, sizes.get("Y")),
        ]
        if all(physical):
            parts[0] += f" ({physical[0]}, {physical[1]})"
        shape = content.input.shape
        value = _render.value_at(content.input, shape, y, x)
        parts.append(f"value {_render.number_text(value)}")
        chosen = self.output_combo.currentData()
        if chosen and chosen in content.outputs:
            plane, _kind = content.outputs[chosen]
            found = _render.value_at(plane, shape, y, x)
            parts.append(f"{chosen} {_render.number_text(found)}")
        return " · ".join(parts)

    def _show_readout(self) -> None:
        y, x = self._hovered
        self.readout_label.setText(self.readout_at(y, x) if y >= 0 else "")

    def _on_pixel_hovered(self, y: int, x: int) -> None:
        self._hovered = (y, x)
        self._show_readout()
        self.pixel_hovered.emit(y, x)

    # ---------------------------------------------------------------- slots

    def _on_zoom_changed(self, zoom: float) -> None:
        self.zoom_label.setText(f"Zoom {zoom * 100:.0f}%")

    def _on_fit_triggered(self) -> None:
        self.view.fit()

    def _on_actual_triggered(self) -> None:
        self.view.actual_size()

    def _on_zoom_in_triggered(self) -> None:
        self.view.zoom_in()

    def _on_zoom_out_triggered(self) -> None:
        self.view.zoom_out()

    def _step(self, letter: str, by: int) -> None:
        content = self.content
        if content is None or content.sizes.get(letter, 1) <= 1:
            return
        if letter == "C":
            count = self.channel_combo.count()
            self.channel_combo.setCurrentIndex((self.channel_combo.currentIndex() + by) % count)
            return
        slider = self.z_slider if letter == "Z" else self.t_slider
        slider.setValue(slider.value() + by)

    def _on_position_edited(self, *_args: Any) -> None:
        if self._filling or self.content is None:
            return
        self._update_stack_labels()
        self.position_changed.emit(self.position())

    def _on_overlay_changed(self, *_args: Any) -> None:
        if not self._filling:
            self.overlay_choice = str(self.output_combo.currentData() or "")
        self._on_display_changed()

    def _on_toggle_overlay(self) -> None:
        if self.output_combo.currentIndex() > 0:
            self._last_overlay = self.output_combo.currentIndex()
            self.output_combo.setCurrentIndex(0)
        elif self.output_combo.count() > 1:
            self.output_combo.setCurrentIndex(
                min(self._last_overlay, self.output_combo.count() - 1)
            )

    def _on_display_changed(self, *_args: Any) -> None:
        if self._filling:
            return
        self.draw()
        self._show_readout()

    def _on_limits_edited(self, *_args: Any) -> None:
        if self.content is not None:
            self._limits_by_channel[self.content.position.get("C", 0)] = self.limits()
        self.histogram.set_limits(self.limits())
        self.draw()

    def _on_limits_dragged(self, low: float, high: float) -> None:
        self._set_limits((low, high))
        self.draw()

    def _on_auto_clicked(self) -> None:
        if self.content is None:
            return
        self._set_limits(_render.auto_limits(self.content.input))
        self.histogram.set_limits(self.limits())
        self.draw()
