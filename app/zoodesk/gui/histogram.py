"""A small bar chart of a histogram, drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

#: Bar colour: the application's accent.
BAR_COLOUR = QColor(43, 138, 158)
#: Colour of the contrast limits drawn over the bars (reads on light and dark themes).
LIMIT_COLOUR = QColor(230, 140, 20)
#: How close (in screen pixels) a press must be to a limit to drag it.
GRAB_DISTANCE = 6.0


def _number(value: float) -> str:
    """A short label for an axis: whole numbers up to a million, else 4 significant digits."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if 1000 <= abs(value) < 1e6:
        return f"{value:.0f}"
    return f"{value:.4g}"


class HistogramWidget(QWidget):
    """Bars of counts over bins, with the value range and the largest count marked.

    Hovering a bar shows its range and count.  The counts and edges shown are kept in
    :attr:`counts` and :attr:`edges`.  Optionally (:meth:`set_limits`) two contrast
    limits are drawn over the bars, joined by the ramp from black to white they make;
    with ``draggable`` limits, dragging one reports both by :attr:`limits_dragged`.

    Parameters
    ----------
    noun
        What is counted, for the footer and the tooltips (``"objects"``, ``"pixels"``).
    log_counts
        Bar heights on a logarithmic scale (an image's background would flatten the
        rest of its histogram).
    """

    #: The user dragged a contrast limit: the new (low, high).
    limits_dragged = Signal(float, float)

    def __init__(
        self, parent: QWidget | None = None, *, noun: str = "objects", log_counts: bool = False
    ) -> None:
        super().__init__(parent)
        self.setObjectName("histogram")
        self.setMouseTracking(True)
        self.setMinimumSize(QSize(200, 120))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.counts = np.zeros(0, dtype=np.int64)
        self.edges = np.zeros(0, dtype=np.float64)
        self.title = ""
        self.noun = noun
        self.log_counts = log_counts
        #: The contrast limits drawn, or None.
        self.limits: tuple[float, float] | None = None
        self.limits_draggable = False
        self._dragging = -1
        self._placeholder = "No objects to plot."

    def set_histogram(self, counts: np.ndarray, edges: np.ndarray, title: str) -> None:
        """Show ``counts`` over the bins between ``edges`` (one more than counts)."""
        self.counts = np.asarray(counts, dtype=np.int64)
        self.edges = np.asarray(edges, dtype=np.float64)
        self.title = title
        self.update()

    def set_limits(self, limits: tuple[float, float] | None) -> None:
        """Draw contrast limits (low, high) over the bars; None draws none."""
        self.limits = None if limits is None else (float(limits[0]), float(limits[1]))
        self.update()

    def clear(self, placeholder: str) -> None:
        """Show no bars, and ``placeholder`` instead."""
        self.counts = np.zeros(0, dtype=np.int64)
        self.edges = np.zeros(0, dtype=np.float64)
        self.title = ""
        self._placeholder = placeholder
        self.update()

    def _plot_rect(self) -> QRectF:
        metrics = self.fontMetrics()
        # Room for the largest count, written on the axis (at least five digits' worth).
        top = str(int(self.counts.max())) if self.counts.size else ""
        left = max(metrics.horizontalAdvance("00000"), metrics.horizontalAdvance(top)) + 8
        lines = 2 if self.title else 1
        bottom = lines * metrics.height() + 6
        return QRectF(left, 6, max(1, self.width() - left - 10), max(1, self.height() - bottom - 6))

    def bar_at(self, x: float) -> int:
        """The bar under the widget's x coordinate; -1 when there is none."""
        plot = self._plot_rect()
        if self.counts.size == 0 or not plot.left() <= x < plot.right():
            return -1
        return min(int((x - plot.left()) / plot.width() * self.counts.size), self.counts.size - 1)

    def x_of(self, value: float) -> float:
        """The widget's x coordinate of a value (clamped to the plot)."""
        plot = self._plot_rect()
        if self.edges.size < 2:
            return plot.left()
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        share = (value - lo) / (hi - lo) if hi > lo else 0.0
        return plot.left() + min(max(share, 0.0), 1.0) * plot.width()

    def value_of(self, x: float) -> float:
        """The value at the widget's x coordinate (clamped to the plotted range)."""
        plot = self._plot_rect()
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        share = min(max((x - plot.left()) / plot.width(), 0.0), 1.0)
        return lo + share * (hi - lo)

    def _height(self, count: int, top: int) -> float:
        if self.log_counts:
            return math.log1p(count) / math.log1p(top)
        return count / top

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        palette = self.palette()
        text = palette.windowText().color()
        painter.fillRect(self.rect(), palette.base())
        if self.counts.size == 0 or int(self.counts.sum()) == 0:
            painter.setPen(palette.placeholderText().color())
            painter.drawText(
                self.rect(),
                int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap),
                self._placeholder,
            )
            painter.end()
            return
        plot = self._plot_rect()
        metrics = self.fontMetrics()
        top = int(self.counts.max())
        width = plot.width() / self.counts.size
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(BAR_COLOUR)
        for i, count in enumerate(self.counts):
            if count <= 0:
                continue
            height = plot.height() * self._height(int(count), top)
            bar = QRectF(plot.left() + i * width, plot.bottom() - height, width, height)
            # A one-pixel gap keeps neighbouring bars apart when they are wide enough.
            painter.drawRect(bar.adjusted(0, 0, -1 if width > 3 else 0, 0))
        painter.setPen(QPen(text, 1))
        painter.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.bottom()))
        painter.drawLine(QPointF(plot.left(), plot.top()), QPointF(plot.left(), plot.bottom()))
        if self.limits is not None:
            self._draw_limits(painter, plot)
            painter.setPen(QPen(text, 1))
        ascent = metrics.ascent()
        painter.drawText(
            QRectF(0, plot.top() - 2, plot.left() - 4, metrics.height()),
            int(Qt.AlignmentFlag.AlignRight),
            str(top),
        )
        painter.drawText(
            QRectF(0, plot.bottom() - metrics.height(), plot.left() - 4, metrics.height()),
            int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom),
            "0",
        )
        below = plot.bottom() + 2 + ascent
        low, high = _number(float(self.edges[0])), _number(float(self.edges[-1]))
        painter.drawText(QPointF(plot.left(), below), low)
        painter.drawText(QPointF(plot.right() - metrics.horizontalAdvance(high), below), high)
        if self.title:
            painter.drawText(
                QRectF(plot.left(), below + metrics.descent(), plot.width(), metrics.height()),
                int(Qt.AlignmentFlag.AlignHCenter),
                f"{self.title} · {int(self.counts.sum())} {self.noun}",
            )
        painter.end()

    def _draw_limits(self, painter: QPainter, plot: QRectF) -> None:
        assert self.limits is not None
        low, high = (self.x_of(v) for v in self.limits)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(LIMIT_COLOUR, 1.5, Qt.PenStyle.DashLine))
        # The ramp the limits make: black at the low limit up to white at the high one.
        painter.drawLine(QPointF(low, plot.bottom()), QPointF(high, plot.top()))
        painter.setPen(QPen(LIMIT_COLOUR, 2))
        for x in (low, high):
            painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)

    def _limit_near(self, x: float) -> int:
        """The limit (0 low, 1 high) within grabbing distance of x; -1 for none."""
        if self.limits is None or not self.limits_draggable or self.edges.size < 2:
            return -1
        distances = [abs(self.x_of(v) - x) for v in self.limits]
        nearest = int(np.argmin(distances))
        return nearest if distances[nearest] <= GRAB_DISTANCE else -1

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._dragging = self._limit_near(event.position().x())
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._dragging = -1
        super().mouseReleaseEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        x = event.position().x()
        if self._dragging >= 0 and self.limits is not None:
            moved = list(self.limits)
            moved[self._dragging] = self.value_of(x)
            low, high = min(moved), max(moved)
            # Dragged past the other limit: the one held is now the other end.
            self._dragging = 0 if moved[self._dragging] == low else 1
            self.set_limits((low, high))
            self.limits_dragged.emit(low, high)
            return
        grab = self._limit_near(x) >= 0
        self.setCursor(Qt.CursorShape.SizeHorCursor if grab else Qt.CursorShape.ArrowCursor)
        i = self.bar_at(x)
        if i < 0:
            QToolTip.hideText()
            return
        low, high = float(self.edges[i]), float(self.edges[i + 1])
        QToolTip.showText(
            event.globalPosition().toPoint(),
            f"{_number(low)} – {_number(high)}: {int(self.counts[i])} {self.noun}",
            self,
        )
