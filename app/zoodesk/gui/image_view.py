"""A zoomable picture of an image plane, with a scale bar and an optional region
selection."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QRubberBand,
    QWidget,
)

from zoodesk.gui import _render

#: Zoom steps of the wheel and of :meth:`ImageViewWidget.zoom_in` / ``zoom_out``.
ZOOM_STEP = 1.25
#: The scale bar is at most this many screen pixels long.
SCALE_BAR_PIXELS = 110.0


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage holding its own copy of an ``(H, W, 3)`` uint8 array."""
    data = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = data.shape[:2]
    image = QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()


class ImageViewWidget(QGraphicsView):
    """Shows one RGB picture, fitted to the view; the wheel zooms.

    The view stays fitted to the window until the user zooms; a picture of another
    size fits again, one of the same size keeps the zoom (:attr:`zoom_changed` tells
    the zoom).  With :meth:`set_pixel_size` a scale bar of a round length is drawn in
    the bottom right corner.

    The picture pixel under the cursor is reported by :attr:`pixel_hovered`, a click
    on one by :attr:`pixel_clicked`.  With :meth:`set_region_selectable` a drag
    selects a rectangle, reported by :attr:`region_selected` as ``(y, x, height,
    width)`` in picture pixels plus the picture's offset set with :meth:`set_picture`.
    """

    region_selected = Signal(int, int, int, int)
    #: The cursor is over picture pixel (y, x); (-1, -1) once it leaves the picture.
    pixel_hovered = Signal(int, int)
    #: Picture pixel (y, x) was clicked (pressed and released without dragging).
    pixel_clicked = Signal(int, int)
    #: The zoom changed (screen pixels per picture pixel).
    zoom_changed = Signal(float)

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.scene().addItem(self._item)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        # The scale bar stays put while the picture scrolls: redraw rather than blit.
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setMinimumSize(QSize(240, 200))
        self._placeholder = placeholder
        self._has_picture = False
        self._fitted = True
        self._selectable = False
        self._offset = (0, 0)
        self._band: QRubberBand | None = None
        self._origin: QPoint | None = None
        self._pressed_at: QPoint | None = None
        self._hovered = (-1, -1)
        self.picture_size: tuple[int, int] | None = None
        self._pixel_size: tuple[float, str] | None = None
        self._zoom = 0.0
        self.viewport().setMouseTracking(True)

    def set_picture(self, rgb: np.ndarray | None, offset: tuple[int, int] = (0, 0)) -> None:
        """Show an ``(H, W, 3)`` uint8 array (None clears); ``offset`` is its (y, x)
        position in the whole image, added to selected regions."""
        self._offset = offset
        if rgb is None:
            self._item.setPixmap(QPixmap())
            self._has_picture = False
            self.picture_size = None
        else:
            size = (int(rgb.shape[0]), int(rgb.shape[1]))
            if size != self.picture_size:
                # Another size: the zoom of the last picture would show a corner of it.
                self._fitted = True
            self._item.setPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
            self._has_picture = True
            self.picture_size = size
            self.scene().setSceneRect(QRectF(self._item.boundingRect()))
            if self._fitted:
                self.fit()
        self.viewport().update()

    def set_pixel_size(self, pixel_size: tuple[float, str] | None) -> None:
        """The physical size of a picture pixel (``(0.65, "µm")``) for the scale bar;
        None hides it."""
        self._pixel_size = pixel_size
        self.viewport().update()

    def zoom(self) -> float:
        """Screen pixels per picture pixel."""
        return float(self.transform().m11())

    def is_fitted(self) -> bool:
        """Whether the picture follows the view's size (not zoomed by the user)."""
        return self._fitted

    def scale_bar(self) -> tuple[float, str] | None:
        """The scale bar drawn: its length on screen and its label; None when hidden."""
        if not self._has_picture:
            return None
        found = _render.scale_bar(self._pixel_size, self.zoom(), SCALE_BAR_PIXELS)
        return None if found is None else (found[0] * self.zoom(), found[1])

    def _zoomed(self) -> None:
        zoom = self.zoom()
        if zoom != self._zoom:
            self._zoom = zoom
            self.zoom_changed.emit(zoom)
        self.viewport().update()

    def actual_size(self) -> None:
        """One screen pixel per picture pixel, around the same centre."""
        centre = self.mapToScene(self.viewport().rect().center())
        self._fitted = False
        self.resetTransform()
        self.centerOn(centre)
        self._zoomed()

    def zoom_by(self, factor: float) -> None:
        """Zoom in (``factor`` > 1) or out around the view's centre."""
        if not self._has_picture:
            return
        zoom = self.zoom() * factor
        if not 1 / 64 <= zoom <= 64:
            return
        self._fitted = False
        self.scale(factor, factor)
        self._zoomed()

    def zoom_in(self) -> None:
        """Zoom in one step."""
        self.zoom_by(ZOOM_STEP)

    def zoom_out(self) -> None:
        """Zoom out one step."""
        self.zoom_by(1 / ZOOM_STEP)

    def has_picture(self) -> bool:
        return self._has_picture

    def set_placeholder(self, text: str) -> None:
        """The text shown while there is no picture."""
        self._placeholder = text
        self.viewport().update()

    def set_region_selectable(self, selectable: bool) -> None:
        """Let a left-drag select a region (instead of panning)."""
        self._selectable = selectable
        self.setDragMode(
            QGraphicsView.DragMode.NoDrag if selectable else QGraphicsView.DragMode.ScrollHandDrag
        )

    def fit(self) -> None:
        """Fit the whole picture into the view."""
        self._fitted = True
        if self._has_picture:
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)
            self._zoomed()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        if not self._has_picture:
            return
        if event.angleDelta().y() == 0:
            return
        # The wheel zooms around the pixel under the cursor, as in Fiji and napari.
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.zoom_by(ZOOM_STEP if event.angleDelta().y() > 0 else 1 / ZOOM_STEP)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self.fit()

    def pixel_at(self, position: QPoint) -> tuple[int, int] | None:
        """The picture pixel (y, x) at a viewport position; None off the picture."""
        if not self._has_picture or self.picture_size is None:
            return None
        scene = self.mapToScene(position)
        y, x = math.floor(scene.y()), math.floor(scene.x())
        height, width = self.picture_size
        return (y, x) if 0 <= y < height and 0 <= x < width else None

    def _hover(self, pixel: tuple[int, int] | None) -> None:
        pixel = pixel or (-1, -1)
        if pixel != self._hovered:
            self._hovered = pixel
            self.pixel_hovered.emit(*pixel)

    def leaveEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        self._hover(None)
        super().leaveEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._pressed_at = event.position().toPoint()
        if self._selectable and self._has_picture and event.button() == Qt.MouseButton.LeftButton:
            self._origin = event.position().toPoint()
            if self._band is None:
                self._band = QRubberBand(QRubberBand.Shape.Rectangle, self.viewport())
            self._band.setGeometry(QRect(self._origin, QSize()))
            self._band.show()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._hover(self.pixel_at(event.position().toPoint()))
        if self._band is not None and self._origin is not None:
            self._band.setGeometry(QRect(self._origin, event.position().toPoint()).normalized())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        pressed, self._pressed_at = self._pressed_at, None
        position = event.position().toPoint()
        if (
            pressed is not None
            and event.button() == Qt.MouseButton.LeftButton
            and (position - pressed).manhattanLength() < QApplication.startDragDistance()
        ):
            pixel = self.pixel_at(position)
            if pixel is not None:
                self.pixel_clicked.emit(*pixel)
        if self._band is not None and self._origin is not None:
            rect = self._band.geometry()
            self._band.hide()
            self._origin = None
            scene = self.mapToScene(rect).boundingRect()
            if self.picture_size and scene.width() >= 8 and scene.height() >= 8:
                height, width = self.picture_size
                x0 = int(max(0, scene.left()))
                y0 = int(max(0, scene.top()))
                x1 = int(min(width, scene.right()))
                y1 = int(min(height, scene.bottom()))
                if x1 > x0 and y1 > y0:
                    self.region_selected.emit(
                        self._offset[0] + y0, self._offset[1] + x0, y1 - y0, x1 - x0
                    )
            return
        super().mouseReleaseEvent(event)

    def drawForeground(self, painter: QPainter, rect: QRectF | QRect) -> None:  # noqa: N802
        if self._has_picture:
            self._draw_scale_bar(painter)
            return
        if not self._placeholder:
            return
        painter.save()
        painter.resetTransform()
        painter.setPen(self.palette().placeholderText().color())
        painter.drawText(
            self.viewport().rect(),
            int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap),
            self._placeholder,
        )
        painter.restore()

    def _draw_scale_bar(self, painter: QPainter) -> None:
        found = self.scale_bar()
        if found is None:
            return
        length, label = found
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        area = self.viewport().rect()
        margin, thickness = 14.0, 5.0
        right, bottom = area.right() - margin, area.bottom() - margin
        bar = QRectF(right - length, bottom - thickness, length, thickness)
        # White with a dark edge: readable over bright and dark pictures alike.
        dark = QColor(0, 0, 0, 200)
        painter.setPen(QPen(dark, 1.5))
        painter.setBrush(QColor(255, 255, 255))
        painter.drawRect(bar)
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        baseline = QPointF(bar.center().x() - metrics.horizontalAdvance(label) / 2, bar.top() - 4)
        path = QPainterPath()
        path.addText(baseline, font, label)
        painter.strokePath(path, QPen(dark, 3.0))
        painter.fillPath(path, QColor(255, 255, 255))
        painter.restore()
