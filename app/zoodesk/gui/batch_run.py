"""The batch page's run controls: device, where it runs, the output folder, Start /
Cancel / Resume, and the progress of a run."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._style import icon
from zoodesk.gui.output_folder import OutputFolderWidget
from zoodesk.gui.services import Services
from zoodesk.units import duration

if TYPE_CHECKING:
    from zoodesk.batch.record import FileEntry, RunRecord

log = logging.getLogger(__name__)

#: The outcomes of a run, in the order the status line gives them.
_OUTCOMES = (("ok", "done"), ("skipped", "done earlier"), ("failed", "failed"))


class RunPanelWidget(QGroupBox):
    """Where and how the batch runs, the buttons that run it, and its progress.

    Parameters
    ----------
    services
        The engine (the devices and cluster choices it offers).
    """

    def __init__(self, services: Services, parent: QWidget | None = None) -> None:
        super().__init__("2. Run", parent)
        self.services = services
        self._started = 0.0
        self._to_do = 0
        self._files_done = 0
        self._pixels_done = 0

        self.device_combo = QComboBox()
        self.device_combo.setObjectName("deviceCombo")
        self.cluster_combo = QComboBox()
        self.cluster_combo.setObjectName("clusterCombo")
        self.cluster_combo.setToolTip(
            "Where the files are processed: here, in worker processes on this computer, "
            "or on a Dask cluster set in Settings (see the user guide)"
        )
        self.device_label = QLabel("")
        self.device_label.setObjectName("deviceLabel")
        self.device_label.setWordWrap(True)
        self.output = OutputFolderWidget()
        self.overwrite_check = QCheckBox("Redo files already done")
        self.overwrite_check.setObjectName("overwriteCheck")
        self.overwrite_check.setToolTip(
            "Process every file again, even those an earlier run into this folder finished"
        )
        self.start_button = QPushButton(icon("start"), "Start")
        self.start_button.setObjectName("startButton")
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.resume_button = QPushButton(icon("resume"), "Resume")
        self.resume_button.setObjectName("resumeButton")
        self.results_button = QPushButton(icon("results"), "Show results")
        self.results_button.setObjectName("resultsButton")
        self.results_button.setToolTip("Open the results of the last run on the Results page")
        self.open_folder_button = QPushButton(icon("open"), "Open output folder")
        self.open_folder_button.setObjectName("openOutputButton")

        self.overall_bar = QProgressBar()
        self.overall_bar.setObjectName("overallProgress")
        self.overall_bar.setFormat("%v of %m files")
        self.file_bar = QProgressBar()
        self.file_bar.setObjectName("fileProgress")
        self.file_bar.setFormat("current file: %p%")
        self.progress_label = QLabel("")
        self.progress_label.setObjectName("progressLabel")
        self.progress_label.setWordWrap(True)
        self.status_label = QLabel("Ready.")
        self.status_label.setObjectName("runStatus")
        self.status_label.setWordWrap(True)
        font = self.status_label.font()
        font.setBold(True)
        self.status_label.setFont(font)

        where_row = QHBoxLayout()
        where_row.addWidget(QLabel("Device:"))
        where_row.addWidget(self.device_combo)
        where_row.addWidget(QLabel("Run on:"))
        where_row.addWidget(self.cluster_combo)
        where_row.addWidget(self.device_label, 1)
        output_row = QHBoxLayout()
        output_row.addWidget(QLabel("Output folder:"))
        output_row.addWidget(self.output, 1)
        output_row.addWidget(self.open_folder_button)
        output_row.addWidget(self.overwrite_check)
        # The status and the progress in words share the buttons' row, one above the
        # other, so that the box stays low on small screens.
        words = QVBoxLayout()
        words.setSpacing(0)
        words.addWidget(self.status_label)
        words.addWidget(self.progress_label)
        buttons_row = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.resume_button):
            buttons_row.addWidget(button)
        buttons_row.addLayout(words, 1)
        buttons_row.addWidget(self.results_button)
        bars = QHBoxLayout()
        bars.addWidget(self.overall_bar, 2)
        bars.addWidget(self.file_bar, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(where_row)
        layout.addLayout(output_row)
        layout.addLayout(buttons_row)
        layout.addLayout(bars)
        self.fill_devices()
        self.fill_cluster_choices()
        self.show_idle()

    # --------------------------------------------------------------- choices

    def fill_cluster_choices(self) -> None:
        """List where runs can go (the cluster setting's choice selected)."""
        self.cluster_combo.clear()
        for label, value in self.services.cluster_choices():
            self.cluster_combo.addItem(label, value)
        self.cluster_combo.setCurrentIndex(0)

    def fill_devices(self) -> None:
        """List what the installed runtime offers (the default device first)."""
        try:
            devices = self.services.devices()
        except Exception as exc:
            log.warning("cannot list devices: %s", exc)
            devices = []
        gpus = [d for d in devices if d.is_gpu]
        best = gpus[0].description if gpus else "CPU"
        self.device_combo.clear()
        self.device_combo.addItem(f"Automatic (best available: {best})", "auto")
        self.device_combo.addItem("CPU", "cpu")
        if gpus:
            self.device_combo.addItem(f"GPU: {gpus[0].description}", "gpu")
        offered = ", ".join(f"{d.description} ({d.provider})" for d in devices) or "none"
        self.device_combo.setToolTip(f"This installation offers: {offered}")
        default = self.services.settings.device
        index = self.device_combo.findData(default)
        self.device_combo.setCurrentIndex(max(index, 0))
        # Said where it is asked for: the line beside the lists is for the device a run
        # actually uses.
        self.device_label.setText("")

    def controls(self) -> list[QWidget]:
        """The controls that set up a run (disabled while one runs)."""
        return [self.device_combo, self.cluster_combo, self.output, self.overwrite_check]

    # -------------------------------------------------------------- progress

    def show_idle(self) -> None:
        """No run yet: empty bars without counts."""
        for bar in (self.overall_bar, self.file_bar):
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setTextVisible(False)
        self.progress_label.setText("")

    def show_starting(self, files: int, text: str) -> None:
        """A run is being set up over ``files`` files."""
        self.overall_bar.setRange(0, max(1, files))
        self.overall_bar.setValue(0)
        self.overall_bar.setTextVisible(True)
        self.file_bar.setRange(0, 100)
        self.file_bar.setValue(0)
        self.file_bar.setTextVisible(True)
        self.progress_label.setText("")
        self.status_label.setText(text)
        self._started = time.monotonic()
        self._to_do = files
        self._files_done = self._pixels_done = 0

    def show_run_started(self, event: Any) -> None:
        """The runner listed the files and loaded the model."""
        self._to_do = event.to_do
        self.overall_bar.setRange(0, max(1, event.total))
        warnings = f" Warning: {'; '.join(event.warnings)}" if event.warnings else ""
        where = event.where or f"{event.device_description} ({event.device})"
        self.device_label.setText(f"Runs on: {where}, {event.weights_format} weights.{warnings}")
        done_before = event.total - event.to_do
        self.status_label.setText(
            f"Running: {event.to_do} file(s) to do"
            + (f", {done_before} done earlier" if done_before else "")
            + "…"
        )

    def show_file_started(self) -> None:
        self.file_bar.setRange(0, 100)
        self.file_bar.setValue(0)

    def show_block_progress(self, done: int, total: int) -> None:
        self.file_bar.setRange(0, max(1, total))
        self.file_bar.setValue(done)

    def count_file(self, entry: FileEntry) -> None:
        """One input ended; a file the run did not get to ("not done") is not counted."""
        if entry.status not in ("ok", "failed", "skipped"):
            return
        self.overall_bar.setValue(self.overall_bar.value() + 1)
        if entry.status in ("ok", "failed"):
            self._files_done += 1
            if entry.shape and entry.status == "ok":
                self._pixels_done += int(np.prod(entry.shape))
        self.progress_label.setText(self._throughput(finished=False))

    def show_run_finished(self, record: RunRecord) -> str:
        """The run is over: the bar and the status line agree; returns the verdict."""
        summary = record.summary()
        processed = sum(summary.get(k, 0) for k, _label in _OUTCOMES)
        self.overall_bar.setRange(0, max(1, len(record.files)))
        self.overall_bar.setValue(processed)
        self.file_bar.setValue(self.file_bar.maximum())
        parts = [
            f"{summary.get(k, 0)} {label}"
            for k, label in (*_OUTCOMES, ("not done", "not done"))
            if summary.get(k)
        ]
        verdict = "Cancelled" if record.status == "cancelled" else "Finished"
        self.status_label.setText(f"{verdict}: {', '.join(parts) or 'nothing to do'}.")
        if record.status == "cancelled":
            self.progress_label.setText("Resume processes the files not done yet.")
        else:
            self.progress_label.setText(self._throughput(finished=True))
        return verdict

    def show_run_failed(self, message: str) -> None:
        self.status_label.setText(f"Failed: {message}")
        self.show_idle()

    def _throughput(self, *, finished: bool) -> str:
        elapsed = time.monotonic() - self._started
        if self._files_done == 0 or elapsed <= 0:
            return ""
        rate = self._files_done / elapsed * 60
        mp = f", {self._pixels_done / elapsed / 1e6:.2f} MP/s" if self._pixels_done else ""
        if finished:
            return f"{self._files_done} processed in {duration(elapsed)} · {rate:.1f} files/min{mp}"
        remaining = max(0, self._to_do - self._files_done)
        per_file = elapsed / self._files_done
        eta = f"about {duration(per_file * remaining)} left" if remaining else "finishing"
        return f"{self._files_done} of {self._to_do} processed · {rate:.1f} files/min{mp} · {eta}"
