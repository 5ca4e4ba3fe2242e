"""The export dialog: study metadata (remembered between runs), then the export itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.export.study import StudyMetadata

_LICENCES = ("CC-BY-4.0", "CC0-1.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0")


def _authors_text(study: StudyMetadata) -> str:
    lines = []
    for a in study.named_authors:
        parts = [a.name, a.orcid, a.affiliation]
        while parts and not parts[-1]:
            parts.pop()
        lines.append(" | ".join(parts))
    return "\n".join(lines)


def _authors_from_text(text: str) -> list[dict[str, str]]:
    authors = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.replace(";", "|").split("|")]
        if parts and parts[0]:
            parts += [""] * 3
            authors.append({"name": parts[0], "orcid": parts[1], "affiliation": parts[2]})
    return authors


class ExportDialog(QDialog):
    """Collect the study metadata and export the run as a deposition package.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs the export off the GUI thread.
    record_path
        The run's ``zoodesk-run.json``.
    """

    #: The export ended: the result, or None when it failed or was cancelled.
    export_finished = Signal(object)

    def __init__(
        self,
        services: Services,
        runner: TaskRunner,
        record_path: Path,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("exportDialog")
        self.setWindowTitle("Export for deposition")
        self.setMinimumWidth(620)
        self.services = services
        self.runner = runner
        self.run_dir = Path(record_path).parent
        self._worker: Worker | None = None
        self.result_value: Any = None

        self.title_edit = QLineEdit()
        self.title_edit.setPlaceholderText("e.g. Nuclei segmentation of HeLa cells, screen 3")
        self.description_edit = QPlainTextEdit()
        self.description_edit.setPlaceholderText("What was imaged, and why")
        self.description_edit.setFixedHeight(70)
        self.authors_edit = QPlainTextEdit()
        self.authors_edit.setPlaceholderText("One per line: Name | ORCID | Affiliation")
        self.authors_edit.setFixedHeight(60)
        self.license_combo = QComboBox()
        self.license_combo.setEditable(True)
        self.license_combo.addItems(_LICENCES)
        self.keywords_edit = QLineEdit()
        self.keywords_edit.setPlaceholderText("comma separated")
        self.organism_edit = QLineEdit()
        self.organism_edit.setPlaceholderText("e.g. Homo sapiens")
        self.entity_edit = QLineEdit()
        self.entity_edit.setPlaceholderText("e.g. HeLa cells")
        self.preparation_edit = QLineEdit()
        self.method_edit = QLineEdit()
        self.method_edit.setPlaceholderText("e.g. widefield fluorescence microscopy")
        self.instrument_edit = QLineEdit()

        study_box = QGroupBox("Study (remembered for the next export)")
        form = QFormLayout(study_box)
        # * marks what the BioImage Archive requires.
        form.addRow("Title *:", self.title_edit)
        form.addRow("Description *:", self.description_edit)
        form.addRow("Authors *:", self.authors_edit)
        form.addRow("Licence:", self.license_combo)
        form.addRow("Keywords:", self.keywords_edit)
        form.addRow("Organism *:", self.organism_edit)
        form.addRow("Biological entity:", self.entity_edit)
        form.addRow("Sample preparation:", self.preparation_edit)
        form.addRow("Imaging method *:", self.method_edit)
        form.addRow("Instrument *:", self.instrument_edit)
        self.required_label = QLabel("")
        self.required_label.setObjectName("archiveRequired")
        self.required_label.setWordWrap(True)
        form.addRow(self.required_label)
        for edit in (
            self.title_edit,
            self.organism_edit,
            self.method_edit,
            self.instrument_edit,
        ):
            edit.textChanged.connect(self._on_form_changed)
        for text_edit in (self.description_edit, self.authors_edit):
            text_edit.textChanged.connect(self._on_form_changed)

        self.include_radio = QRadioButton("Copy the input images into the package")
        self.include_radio.setChecked(True)
        self.reference_radio = QRadioButton("Reference the input images (paths and checksums)")
        self.destination_edit = QLineEdit(
            str(self.run_dir.parent / f"{self.run_dir.name}-deposition")
        )
        self.destination_edit.setObjectName("exportDestination")
        browse = QPushButton(icon("folder"), "Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        self.overwrite_check = QCheckBox("Replace an earlier export there")
        dest_row = QHBoxLayout()
        dest_row.addWidget(self.destination_edit, 1)
        dest_row.addWidget(browse)
        package_box = QGroupBox("Package")
        package_form = QFormLayout(package_box)
        package_form.addRow("Images:", self.include_radio)
        package_form.addRow("", self.reference_radio)
        package_form.addRow("Folder:", dest_row)
        package_form.addRow("", self.overwrite_check)

        self.progress = QProgressBar()
        self.progress.setValue(0)
        self.status_label = QLabel("")
        self.status_label.setObjectName("exportStatus")
        self.status_label.setWordWrap(True)
        self.details_button = QPushButton("Details…")
        self.details_button.setObjectName("exportProblemDetails")
        self.details_button.setToolTip("The problem as the export service words it")
        self.details_button.setVisible(False)
        self.details_button.clicked.connect(self._on_details_clicked)
        self._details = ""
        self.export_button = QPushButton(icon("export"), "Export")
        self.export_button.setObjectName("exportStart")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self._on_close_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.details_button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(study_box)
        layout.addWidget(package_box)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)

        unavailable = services.export_available()
        if unavailable is not None:
            self.status_label.setText(f"Export is not possible: {unavailable}.")
            self.export_button.setEnabled(False)
        else:
            self._fill(services.last_study())
        self._on_form_changed()

    def _fill(self, study: StudyMetadata | None) -> None:
        if study is None:
            return
        self.title_edit.setText(study.title)
        self.description_edit.setPlainText(study.description)
        self.authors_edit.setPlainText(_authors_text(study))
        self.license_combo.setCurrentText(study.license)
        self.keywords_edit.setText(", ".join(study.clean_keywords))
        self.organism_edit.setText(study.biosample.organism.scientific_name)
        self.entity_edit.setText(study.biosample.biological_entity)
        self.preparation_edit.setText(study.specimen.preparation)
        self.method_edit.setText(study.acquisition.imaging_method)
        self.instrument_edit.setText(study.acquisition.instrument)

    def _on_form_changed(self) -> None:
        missing = self.services.missing_for_archive(self.form_data())
        self.required_label.setText(
            "Still missing for the BioImage Archive: "
            f"{', '.join(missing)}. You can export now; the package is then a draft."
            if missing
            else "Everything the BioImage Archive requires is given."
        )

    def form_data(self) -> dict[str, Any]:
        """The form as plain study metadata fields."""
        return {
            "title": self.title_edit.text(),
            "description": self.description_edit.toPlainText(),
            "authors": _authors_from_text(self.authors_edit.toPlainText()),
            "license": self.license_combo.currentText(),
            "keywords": [k.strip() for k in self.keywords_edit.text().split(",") if k.strip()],
            "biosample": {
                "organism": {"scientific_name": self.organism_edit.text()},
                "biological_entity": self.entity_edit.text(),
            },
            "specimen": {"preparation": self.preparation_edit.text()},
            "acquisition": {
                "imaging_method": self.method_edit.text(),
                "instrument": self.instrument_edit.text(),
            },
        }

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into", str(self.run_dir.parent))
        if folder:
            self.destination_edit.setText(str(Path(folder) / f"{self.run_dir.name}-deposition"))

    def _on_export_clicked(self) -> None:
        self.start_export()

    def start_export(self) -> None:
        """Validate the form and write the package off the GUI thread."""
        self._show_details("")
        try:
            study = self.services.study_from_form(self.form_data())
        except Exception as exc:
            # The form is the "study form" the message starts with: it goes without saying.
            self.status_label.setText(readable_message(exc).removeprefix("study form: "))
            self._show_details(str(exc))
            return
        destination = Path(self.destination_edit.text().strip()).expanduser()
        include = self.include_radio.isChecked()
        overwrite = self.overwrite_check.isChecked()
        self.export_button.setEnabled(False)
        self.close_button.setText("Cancel")
        self.status_label.setText("Exporting…")
        self.progress.setRange(0, 0)
        self._worker = self.runner.start(
            lambda cancel: self.services.export_run(
                self.run_dir,
                destination,
                study,
                include_images=include,
                overwrite=overwrite,
                cancel=cancel,
            ),
            "export",
            on_event=self._on_export_event,
            on_error=self._on_export_failed,
            on_finished=self._on_export_ended,
        )

    def _show_details(self, text: str) -> None:
        self._details = text
        self.details_button.setVisible(bool(text))

    def _on_details_clicked(self) -> None:
        box = QMessageBox(self)
        box.setObjectName("exportProblemBox")
        box.setIcon(QMessageBox.Icon.Information)
        box.setWindowTitle("Export for deposition")
        box.setText(self.status_label.text())
        box.setDetailedText(self._details)
        box.open()

    def _on_export_event(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "ExportStarted":
            self.progress.setRange(0, 1000)
            self.status_label.setText(
                f"Writing {event.outputs} output(s) of {event.inputs_done} image(s) "
                f"to {event.destination}…"
            )
        elif kind == "ExportProgress":
            fraction = event.done / event.total if event.total else 0.0
            self.progress.setValue(int(1000 * fraction))
            where = f": {Path(event.path).name}" if event.path else ""
            self.status_label.setText(f"{event.stage}{where}")
        elif kind == "ExportWarning":
            self.status_label.setText(f"Note: {event.message}")
        elif kind == "ExportFinished":
            result = event.result
            self.result_value = result
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            notes = f" {len(result.warnings)} note(s) in the log." if result.warnings else ""
            if result.draft:
                notes += (
                    " A draft: the BioImage Archive also requires the study's "
                    f"{', '.join(result.missing_for_archive)}."
                )
            self.status_label.setText(
                f"Exported {result.files} files ({result.size / 1e6:.1f} MB) to "
                f"{result.destination}.{notes}"
            )
            self.export_finished.emit(result)

    def _on_export_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if isinstance(exc, CancelledError):
            self.status_label.setText("Export cancelled; nothing was left behind.")
        else:
            self.status_label.setText(f"Export failed: {readable_message(exc)}")
            self._show_details(str(exc))
            report_error(self, "Export failed", exc, self.services.log_file)
        self.export_finished.emit(None)

    def _on_export_ended(self) -> None:
        self._worker = None
        self.export_button.setEnabled(True)
        self.close_button.setText("Close")

    def _on_close_clicked(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self.status_label.setText("Cancelling…")
            return
        self.accept()

    def reject(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            return
        super().reject()
