"""The details pane of the model library: cover, name, what ZooDesk can do, authors, test.

It shows what it is given and holds no state of its own beyond the labels; the
library page (:mod:`zoodesk.gui.library`) decides what to show and places its
action buttons and task progress in the pane.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPixmap, QTextDocumentFragment
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui.wording import local_time

if TYPE_CHECKING:
    from zoodesk.inference.checks import TestStatus
    from zoodesk.models.authors import Author
    from zoodesk.models.library import LibraryItem
    from zoodesk.models.package import ModelPackage
    from zoodesk.models.spec import ModelSpec, TensorSpec

#: The cover's box: small enough that cover and title fit side by side at 1024 pixels.
COVER_SIZE = QSize(240, 144)
_ERROR_COLOUR = "#c0392b"
_PASSED_COLOUR = "#2e8b57"
_FIELDS = (
    ("can", "ZooDesk can"),
    ("test", "Test"),
    ("authors", "Authors"),
    ("license", "Licence"),
    ("cite", "Citation"),
    ("inputs", "Inputs"),
    ("outputs", "Outputs"),
    ("weights", "Weights"),
    ("where", "Location"),
)


def html_list(values: Sequence[str]) -> str:
    """Values separated by commas, or "not stated"."""
    return ", ".join(html.escape(v) for v in values) if values else "<i>not stated</i>"


def authors_html(authors: Sequence[Author | str]) -> str:
    """One author per line, each with affiliation and ORCID when the description
    gives them (the ORCID links to the author's record)."""
    lines = []
    for author in authors:
        if isinstance(author, str):
            lines.append(html.escape(author))
            continue
        line = html.escape(author.name)
        if author.affiliation:
            line += f" — {html.escape(author.affiliation)}"
        if author.orcid:
            orcid = html.escape(author.orcid)
            line += f' · ORCID <a href="https://orcid.org/{orcid}">{orcid}</a>'
        lines.append(line)
    return "<br>".join(lines) if lines else "<i>not stated</i>"


def _tensors_html(tensors: Sequence[TensorSpec]) -> str:
    return "<br>".join(
        f"<b>{html.escape(t.id)}</b>: {t.axes_letters} ({html.escape(t.data_type)})"
        for t in tensors
    )


def _citations_html(spec: ModelSpec) -> str:
    cites = []
    for c in spec.cite:
        text = html.escape(c.get("text", ""))
        link = c.get("url") or (f"https://doi.org/{c['doi']}" if c.get("doi") else "")
        cites.append(
            f'{text} <a href="{html.escape(link)}">{html.escape(link)}</a>' if link else text
        )
    return "<br>".join(cites) or "<i>none given</i>"


class ModelDetailsWidget(QScrollArea):
    """The selected model's details, scrolling vertically, never sideways.

    Parameters
    ----------
    actions
        The action buttons, shown under the description.
    task_area
        The task's message and progress, shown under the buttons.
    """

    def __init__(self, actions: QWidget, task_area: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelDetailsScroll")
        self.cover_label = QLabel()
        self.cover_label.setObjectName("modelCover")
        self.cover_label.setFixedSize(COVER_SIZE)
        self.cover_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.cover_label.setFrameShape(QFrame.Shape.StyledPanel)
        self.name_label = QLabel("Select a model")
        self.name_label.setObjectName("modelName")
        self.name_label.setWordWrap(True)
        font = self.name_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.name_label.setFont(font)
        self.subtitle_label = QLabel("")
        self.subtitle_label.setWordWrap(True)
        self.description_label = QLabel("")
        self.description_label.setWordWrap(True)
        self.description_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for label in (self.name_label, self.subtitle_label):
            # Word-wrapped: the title takes the width beside the cover, however long.
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.fields = QFormLayout()
        self.fields.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.field_labels: dict[str, QLabel] = {}
        for key, title in _FIELDS:
            field_label = QLabel("")
            field_label.setObjectName(f"field_{key}")
            field_label.setWordWrap(True)
            field_label.setTextFormat(Qt.TextFormat.RichText)
            field_label.setOpenExternalLinks(True)
            field_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
            field_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.fields.addRow(f"{title}:", field_label)
            self.field_labels[key] = field_label

        detail = QWidget()
        detail.setObjectName("modelDetails")
        detail_layout = QVBoxLayout(detail)
        head = QHBoxLayout()
        head.addWidget(self.cover_label, 0, Qt.AlignmentFlag.AlignTop)
        titles = QVBoxLayout()
        titles.addWidget(self.name_label)
        titles.addWidget(self.subtitle_label)
        titles.addStretch(1)
        head.addLayout(titles, 1)
        detail_layout.addLayout(head)
        detail_layout.addWidget(self.description_label)
        detail_layout.addWidget(actions)
        detail_layout.addWidget(task_area)
        detail_layout.addLayout(self.fields)
        detail_layout.addStretch(1)
        self.setWidget(detail)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)

    # --------------------------------------------------------------- showing

    def clear(self) -> None:
        """No model selected."""
        self.cover_label.clear()
        for value in self.field_labels.values():
            value.setText("")
        self.name_label.setText("Select a model")
        self.subtitle_label.setText("")
        self.description_label.setText("")

    def show_item(self, item: LibraryItem, can: str) -> None:
        """What the library knows without loading the package (``can``: plain text)."""
        self.clear()
        self.name_label.setText(item.name)
        ident = (item.origin_label, item.model_id or "", item.version or "")
        self.subtitle_label.setText(" · ".join(part for part in ident if part))
        self.description_label.setText(item.description or "")
        self.field_labels["can"].setText(html.escape(can))
        self.field_labels["authors"].setText(authors_html(item.authors))
        self.field_labels["license"].setText(html.escape(item.license or "not stated"))
        self.field_labels["weights"].setText(html_list(item.weights_formats))
        if item.installed:
            where = item.cached.root if item.cached else item.description_path
            self.field_labels["where"].setText(html.escape(str(where)))
            self.field_labels["test"].setText("<i>checking…</i>")
            self.cover_label.setText("…")
            return
        entry = item.entry
        self.cover_label.setText("Cover shown\nafter download")
        self.field_labels["test"].setText("<i>available after download</i>")
        versions = ", ".join(v.version for v in entry.versions) if entry else ""
        self.field_labels["where"].setText(
            html.escape(f"bioimage.io zoo, versions: {versions or 'unknown'}")
        )
        if entry is not None and len(entry.problems) > 1:
            self.field_labels["can"].setText(
                html.escape(can) + "<br>" + html_list(entry.problems[1:3])
            )

    def show_package(self, spec: ModelSpec, can_html: str, authors: Sequence[Author]) -> None:
        """What the loaded package says (``can_html``: rich text)."""
        self.field_labels["can"].setText(can_html)
        self.description_label.setText(spec.description)
        self.field_labels["authors"].setText(authors_html(authors or spec.authors))
        self.field_labels["license"].setText(html.escape(spec.license or "not stated"))
        self.field_labels["cite"].setText(_citations_html(spec))
        self.field_labels["inputs"].setText(_tensors_html(spec.inputs))
        self.field_labels["outputs"].setText(_tensors_html(spec.outputs))
        self.field_labels["weights"].setText(html_list(tuple(spec.weights)))

    def show_load_error(self, message: str) -> None:
        """The package could not be loaded: why, in place of what ZooDesk can do."""
        self.field_labels["test"].setText("")
        self.cover_label.setText("")
        self.field_labels["can"].setText(
            f"<span style='color:{_ERROR_COLOUR}'>{html.escape(message)}</span>"
        )

    def show_cover(self, package: ModelPackage) -> None:
        """The package's first readable cover image, scaled into the cover box."""
        for cover in package.spec.covers:
            path = package.root / cover
            pixmap = QPixmap(str(path)) if path.is_file() else QPixmap()
            if not pixmap.isNull():
                self.cover_label.setPixmap(
                    pixmap.scaled(
                        self.cover_label.size(),
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                )
                return
        self.cover_label.setText("No cover image")

    def show_test_running(self) -> None:
        self.field_labels["test"].setText("<i>running…</i>")

    def show_test_failed_to_run(self) -> None:
        self.field_labels["test"].setText(
            f"<span style='color:{_ERROR_COLOUR}'>could not run</span>"
        )

    def show_test_status(self, status: TestStatus | None) -> None:
        """The last test's outcome, its time in this computer's local time."""
        label = self.field_labels["test"]
        if status is None:
            label.setText("not tested yet: <i>Run test</i> checks the model on this computer")
            return
        colour = _PASSED_COLOUR if status.passed else _ERROR_COLOUR
        label.setText(
            f"<span style='color:{colour}'><b>{html.escape(status.summary)}</b></span>"
            f" <span>({html.escape(local_time(status.tested_at))})</span>"
        )

    def test_status_text(self) -> str:
        """The test status as shown (plain text)."""
        return QTextDocumentFragment.fromHtml(self.field_labels["test"].text()).toPlainText()
