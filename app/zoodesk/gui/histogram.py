"""A small bar chart of a histogram, drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

#: Bar colour: the application's accent.
BAR_COLOUR = QColor(43, 138, 158)


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
    :attr:`counts` and :attr:`edges`.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("histogram")
        self.setMouseTracking(True)
        self.setMinimumSize(QSize(200, 120))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.counts = np.zeros(0, dtype=np.int64)
        self.edges = np.zeros(0, dtype=np.float64)
        self.title = ""
        self._placeholder = "No objects to plot."

    def set_histogram(self, counts: np.ndarray, edges: np.ndarray, title: str) -> None:
        """Show ``counts`` over the bins between ``edges`` (one more than counts)."""
        self.counts = np.asarray(counts, dtype=np.int64)
        self.edges = np.asarray(edges, dtype=np.float64)
        self.title = title
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
        left = metrics.horizontalAdvance("00000") + 8
        bottom = 2 * metrics.height() + 6
        return QRectF(left, 6, max(1, self.width() - left - 10), max(1, self.height() - bottom - 6))

    def bar_at(self, x: float) -> int:
        """The bar under the widget's x coordinate; -1 when there is none."""
        plot = self._plot_rect()
        if self.counts.size == 0 or not plot.left() <= x < plot.right():
            return -1
        return min(int((x - plot.left()) / plot.width() * self.counts.size), self.counts.size - 1)

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
            height = plot.height() * count / top
            bar = QRectF(plot.left() + i * width, plot.bottom() - height, width, height)
            # A one-pixel gap keeps neighbouring bars apart when they are wide enough.
            painter.drawRect(bar.adjusted(0, 0, -1 if width > 3 else 0, 0))
        painter.setPen(QPen(text, 1))
        painter.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.bottom()))
        painter.drawLine(QPointF(plot.left(), plot.top()), QPointF(plot.left(), plot.bottom()))
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
        painter.drawText(
            QRectF(plot.left(), below + metrics.descent(), plot.width(), metrics.height()),
            int(Qt.AlignmentFlag.AlignHCenter),
            f"{self.title} · {int(self.counts.sum())} objects",
        )
        painter.end()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        i = self.bar_at(event.position().x())
        if i < 0:
            QToolTip.hideText()
            return
        low, high = float(self.edges[i]), float(self.edges[i + 1])
        QToolTip.showText(
            event.globalPosition().toPoint(),
            f"{_number(low)} – {_number(high)}: {int(self.counts[i])} objects",
            self,
        )
