"""Remake the objects of a finished run with other settings, without running the model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from zoodesk.batch.console import input_name
from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.objects_options import ObjectOptionsWidget
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.record import RunRecord
    from zoodesk.models.spec import ModelSpec


class RemeasureDialog(QDialog):
    """Choose the object settings and remake the objects of every image of a run.

    The run's own settings are shown first.  The work is the core's
    :func:`zoodesk.batch.objects.measure_run`, run through the worker helper;
    **Cancel** stops at once, and the images not remade keep their earlier objects.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs the measuring off the GUI thread.
    record
        The run.
    """

    #: The objects were remade (the updated :class:`RunRecord`), cancelled or not.
    measured = Signal(object)

    def __init__(
        self,
        services: Services,
        runner: TaskRunner,
        record: RunRecord,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("remeasureDialog")
        self.setWindowTitle("Remake objects")
        self.setMinimumWidth(520)
        self.services = services
        self.runner = runner
        self.record = record
        self.run_dir = record.path.parent
        self._worker: Worker | None = None
        self._total = 0
        self._done = 0

        intro = QLabel(
            "The objects of every image of this run are made again from the outputs in "
            f"<b>{self.run_dir.name}</b>: label images, tables and the run's summary are "
            "replaced. The model does not run again."
        )
        intro.setWordWrap(True)
        self.options = ObjectOptionsWidget(services, allow_none=False)
        outputs = [str(o.get("id")) for o in record.model.get("outputs") or [] if o.get("id")]
        self.options.set_spec(None, outputs)
        recorded = record.parameters.get("instances")
        if isinstance(recorded, dict) and recorded:
            self.options.set_settings(recorded)
        else:
            self.options.set_choice("auto")
        self.options.changed.connect(self._update_buttons)
        self.model_label = QLabel("Loading the run's model description…")
        self.model_label.setObjectName("remeasureModel")
        self.model_label.setWordWrap(True)

        self.progress = QProgressBar()
        self.progress.setObjectName("remeasureProgress")
        self.progress.setFormat("%v of %m images")
        self.progress.setValue(0)
        self.progress.hide()
        self.status_label = QLabel("")
        self.status_label.setObjectName("remeasureStatus")
        self.status_label.setWordWrap(True)
        self.problems_list = QListWidget()
        self.problems_list.setWordWrap(True)
        self.problems_list.setMaximumHeight(90)
        self.problems_list.hide()
        self.start_button = QPushButton(icon("start"), "Remake objects")
        self.start_button.setObjectName("remeasureStart")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setObjectName("remeasureCancel")
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.options)
        layout.addWidget(self.model_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.problems_list)
        layout.addLayout(buttons)
        self._update_buttons()
        self.runner.start(
            lambda _cancel: self.services.run_model_spec(record),
            "run model",
            on_result=self._on_spec_loaded,
            on_error=self._on_spec_failed,
        )

    @property
    def running(self) -> bool:
        """True while the objects are being remade."""
        return self._worker is not None

    def _on_spec_loaded(self, spec: ModelSpec | None) -> None:
        if spec is None:
            self.model_label.setText(
                "The run's model is no longer installed: choose a method (nothing can be "
                "proposed without it)."
            )
            return
        self.model_label.setText(f"Model: {spec.name}")
        self.options.set_spec(spec)
        recorded = self.record.parameters.get("instances")
        if isinstance(recorded, dict) and recorded:
            # Channels beyond the first are known only now that the outputs are.
            self.options.set_settings(recorded)

    def _on_spec_failed(self, exc: BaseException) -> None:
        self.model_label.setText(f"The run's model cannot be read: {readable_message(exc)}")

    def _update_buttons(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running and self.options.problem() is None)
        self.cancel_button.setEnabled(running)
        self.close_button.setEnabled(not running)
        self.options.setEnabled(not running)

    # ------------------------------------------------------------------ running

    def _on_start_clicked(self) -> None:
        self.start()

    def start(self) -> None:
        """Remake the objects with the settings on the form, off the GUI thread."""
        if self.running or self.options.problem() is not None:
            return
        choice, overrides = self.options.choice(), self.options.overrides()
        self.problems_list.clear()
        self.problems_list.hide()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.status_label.setText("Starting…")
        self._total = self._done = 0
        self._worker = self.runner.start(
            lambda cancel: self.services.measure_run(self.run_dir, choice, overrides, cancel),
            "remake objects",
            on_event=self._on_measure_event,
            on_error=self._on_measure_failed,
            on_finished=self._on_measure_ended,
        )
        self._update_buttons()

    def cancel(self) -> None:
        """Stop at once: the images done keep their new objects, the others their earlier."""
        if self._worker is not None:
            self._worker.cancel()
            self.status_label.setText("Cancelling…")

    def _on_cancel_clicked(self) -> None:
        self.cancel()

    def _on_measure_event(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "MeasureStarted":
            self._total = event.total
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(0)
            self.status_label.setText(
                f"Remaking the objects of {event.total} image(s): {event.settings.describe()} "
                f"({event.reason})…"
            )
        elif kind == "ImageMeasured":
            self._done += 1
            self.progress.setValue(self._done)
            entry = event.entry
            name = input_name(Path(entry.input), entry.scene)
            if event.error:
                self.problems_list.addItem(event.error)
                self.problems_list.show()
            else:
                found = entry.instances or {}
                self.status_label.setText(f"{name}: {found.get('count', 0)} objects")
        elif kind == "MeasureFinished":
            record = event.record
            total = sum(
                int((f.instances or {}).get("count") or 0)
                for f in record.files
                if f.instances and "count" in f.instances
            )
            cancelled = self._worker is not None and self._worker.is_cancelled()
            if cancelled and self._done < self._total:
                text = (
                    f"Cancelled: {self._done} of {self._total} image(s) remade; the others "
                    "keep their earlier objects."
                )
            else:
                text = f"Done: {total} objects in {self._done} image(s)."
            if event.failed:
                text += f" {event.failed} image(s) failed (listed above)."
            self.status_label.setText(text)
            self.measured.emit(record)

    def _on_measure_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if isinstance(exc, CancelledError):
            self.status_label.setText("Cancelled.")
            return
        self.status_label.setText(f"The objects could not be remade: {readable_message(exc)}")
        report_error(self, "Cannot remake the objects", exc, self.services.log_file)

    def _on_measure_ended(self) -> None:
        self._worker = None
        self._update_buttons()

    def reject(self) -> None:
        if self._worker is not None:
            self.cancel()
            return
        super().reject()
