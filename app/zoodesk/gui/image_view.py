"""A zoomable picture of an image plane, with an optional region selection."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QImage, QMouseEvent, QPainter, QPixmap, QResizeEvent, QWheelEvent
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QRubberBand,
    QWidget,
)


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage holding its own copy of an ``(H, W, 3)`` uint8 array."""
    data = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = data.shape[:2]
    image = QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()


class ImageViewWidget(QGraphicsView):
    """Shows one RGB picture, fitted to the view; the wheel zooms.

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

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.scene().addItem(self._item)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
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
            self._item.setPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
            self._has_picture = True
            self.picture_size = (int(rgb.shape[0]), int(rgb.shape[1]))
            self.scene().setSceneRect(QRectF(self._item.boundingRect()))
            if self._fitted:
                self.fit()
        self.viewport().update()

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

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        if not self._has_picture:
            return
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self._fitted = False
        self.scale(factor, factor)

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
        if self._has_picture or not self._placeholder:
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
