"""The batch page: inputs, the model's expectations, a preview, and the run itself.

The page is assembled here from its parts: the table of inputs
(:mod:`zoodesk.gui.batch_table`), the preview (:mod:`zoodesk.gui.batch_preview`),
the run controls and progress (:mod:`zoodesk.gui.batch_run`) and the output folder
(:mod:`zoodesk.gui.output_folder`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.batch_inputs import InputsBoxWidget
from zoodesk.gui.batch_preview import PreviewPanelWidget
from zoodesk.gui.batch_run import RunPanelWidget
from zoodesk.gui.batch_table import (
    COL_AXES,
    COL_FILE,
    COL_FIT,
    COL_PIXEL,
    COL_SHAPE,
    COL_SIZE,
    COL_STATUS,
    COL_TIME,
    COL_TYPE,
    COLUMNS,
    FilesTableWidget,
)
from zoodesk.gui.errors import readable_message, report_error
from zoodesk.gui.objects_options import ObjectOptionsWidget
from zoodesk.gui.output_folder import EarlierRunDialog
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.earlier import EarlierRun
    from zoodesk.batch.preview import InputInfo
    from zoodesk.batch.record import FileEntry, RunRecord
    from zoodesk.batch.request import PredictionRequest
    from zoodesk.models.library import Library, LibraryItem
    from zoodesk.models.package import ModelPackage

__all__ = [
    "COLUMNS",
    "COL_AXES",
    "COL_FILE",
    "COL_FIT",
    "COL_PIXEL",
    "COL_SHAPE",
    "COL_SIZE",
    "COL_STATUS",
    "COL_TIME",
    "COL_TYPE",
    "BatchWidget",
]

log = logging.getLogger(__name__)

#: The side tabs: the preview, the problems found, the objects options.
TAB_PREVIEW, TAB_PROBLEMS, TAB_OBJECTS = range(3)
_NO_INPUTS = "No inputs yet: add a folder, drop one here, or try the samples."


class BatchWidget(QWidget):
    """Choose inputs and a model, preview, then run the whole batch with progress.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs the scan, the preview and the run off the GUI thread.
    """

    #: The model for the run is loaded (its name).
    model_loaded = Signal(str)
    #: The input scan ended (number of files found).
    scan_finished = Signal(int)
    #: A preview is shown (the :class:`PreviewResult`).
    preview_shown = Signal(object)
    #: A run started / is no longer running.
    running_changed = Signal(bool)
    #: A run ended, cancelled or not (its :class:`RunRecord`); None when it failed.
    run_finished = Signal(object)
    #: The user wants to see a run's results (the record path).
    open_results_requested = Signal(Path)
    #: A line for the status bar.
    status_message = Signal(str)
    #: A line for the status bar that stays until the next one (where a run's
    #: outputs went: looked for after the run, maybe long after).
    lasting_message = Signal(str)

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("batchPage")
        self.services = services
        self.runner = runner
        self.setAcceptDrops(True)
        self.package: ModelPackage | None = None
        self._items: list[LibraryItem] = []
        self._pending_model: str | None = None
        self._scan: Worker | None = None
        self._scan_generation = 0
        self._infos: list[InputInfo] = []
        self._run: Worker | None = None
        self._run_over = False
        self._checking = False
        #: The question asked when the output folder holds another run (while open).
        self.earlier_dialog: EarlierRunDialog | None = None
        self.last_record: RunRecord | None = None
        self.record_path: Path | None = None
        self._build_actions()
        self._build_ui()
        self._update_buttons()

    # ------------------------------------------------------------------ building

    def _build_actions(self) -> None:
        self.action_start = QAction(icon("start"), "&Start run", self)
        self.action_start.setShortcut(QKeySequence("Ctrl+R"))
        self.action_start.triggered.connect(self._on_start_triggered)
        self.action_cancel = QAction(icon("cancel"), "&Cancel run", self)
        self.action_cancel.setShortcut(QKeySequence("Ctrl+."))
        self.action_cancel.triggered.connect(self._on_cancel_triggered)
        self.action_resume = QAction(icon("resume"), "&Resume run", self)
        self.action_resume.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.action_resume.setToolTip("Process the files not done yet; finished ones are kept")
        self.action_resume.triggered.connect(self._on_resume_triggered)
        self.action_preview = QAction(icon("preview"), "&Preview selected image", self)
        self.action_preview.setShortcut(QKeySequence("Ctrl+P"))
        self.action_preview.triggered.connect(self._on_preview_triggered)
        self.action_add_folder = QAction(icon("folder"), "Add input &folder…", self)
        self.action_add_folder.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.action_add_folder.triggered.connect(self._on_add_folder_triggered)
        self.action_samples = QAction(icon("samples"), "Try the &sample images", self)
        self.action_samples.triggered.connect(self._on_samples_triggered)

    def _build_ui(self) -> None:
        inputs_box = self._build_inputs_box()

        self.table = FilesTableWidget()
        # The table takes the room left (its wish for more would make the page scroll).
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
        self.table.setMinimumHeight(90)
        self.table.itemSelectionChanged.connect(self._on_file_selected)
        self.files_label = QLabel(_NO_INPUTS)
        self.files_label.setObjectName("filesLabel")
        self.files_label.setWordWrap(True)

        self.preview_panel = PreviewPanelWidget(self.services, self.runner)
        self.preview_panel.preview_button.clicked.connect(self.action_preview.trigger)
        self.preview_panel.preview_requested.connect(self.run_preview)
        self.preview_panel.preview_shown.connect(self.preview_shown)
        self.preview_panel.preview_ended.connect(self._update_buttons)
        self.view = self.preview_panel.view
        self.preview_button = self.preview_panel.preview_button
        self.output_combo = self.preview_panel.output_combo
        self.opacity_slider = self.preview_panel.opacity_slider
        self.preview_label = self.preview_panel.preview_label

        self.failures_list = QListWidget()
        self.failures_list.setObjectName("failuresList")
        self.failures_list.setWordWrap(True)

        # Objects made from an output after each image.
        self.objects_box = ObjectOptionsWidget(self.services)
        self.objects_box.changed.connect(self._on_objects_changed)
        objects_page = QWidget()
        objects_layout = QVBoxLayout(objects_page)
        objects_layout.addWidget(self.objects_box)
        objects_layout.addStretch(1)
        # The form grows with the method's settings: it scrolls rather than squeezes.
        objects_tab = QScrollArea()
        objects_tab.setWidgetResizable(True)
        objects_tab.setFrameShape(QScrollArea.Shape.NoFrame)
        objects_tab.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        objects_tab.setWidget(objects_page)

        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(self.preview_panel, icon("preview"), "Preview")
        self.side_tabs.addTab(self.failures_list, icon("error"), "Problems")
        self.side_tabs.addTab(objects_tab, "Objects")

        files_box = QWidget()
        files_layout = QVBoxLayout(files_box)
        files_layout.setContentsMargins(0, 0, 0, 0)
        # What the model expects sits above the table's "Fits the model" column (and
        # keeps the inputs box low).
        expects_row = QHBoxLayout()
        expects_title = QLabel("Model expects:")
        expects_row.addWidget(expects_title, 0, Qt.AlignmentFlag.AlignTop)
        expects_row.addWidget(self.expect_label, 1)
        files_layout.addLayout(expects_row)
        files_layout.addWidget(self.files_label)
        files_layout.addWidget(self.table, 1)
        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.setChildrenCollapsible(False)
        middle.addWidget(files_box)
        middle.addWidget(self.side_tabs)
        middle.setStretchFactor(0, 3)
        middle.setStretchFactor(1, 2)

        self.run_panel = RunPanelWidget(self.services)
        panel = self.run_panel
        self.device_combo = panel.device_combo
        self.cluster_combo = panel.cluster_combo
        self.device_label = panel.device_label
        self.output_folder = panel.output
        self.output_edit = panel.output.edit
        self.overwrite_check = panel.overwrite_check
        self.start_button = panel.start_button
        self.cancel_button = panel.cancel_button
        self.resume_button = panel.resume_button
        self.results_button = panel.results_button
        self.open_folder_button = panel.open_folder_button
        self.overall_bar = panel.overall_bar
        self.file_bar = panel.file_bar
        self.progress_label = panel.progress_label
        self.status_label = panel.status_label
        self.output_folder.changed.connect(self._update_buttons)
        self.start_button.clicked.connect(self.action_start.trigger)
        self.cancel_button.clicked.connect(self.action_cancel.trigger)
        self.resume_button.clicked.connect(self.action_resume.trigger)
        self.results_button.clicked.connect(self._on_results_clicked)
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)

        content = QWidget()
        content.setObjectName("batchContent")
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(inputs_box)
        layout.addWidget(middle, 1)
        layout.addWidget(self.run_panel)
        # Below the smallest size the page fits, it scrolls rather than overlaps.
        scroll = QScrollArea()
        scroll.setObjectName("batchScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _build_inputs_box(self) -> QGroupBox:
        box = InputsBoxWidget()
        self.inputs_box = box
        self.model_combo = box.model_combo
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.inputs_list = box.inputs_list
        self.add_folder_button = box.add_folder_button
        self.add_folder_button.clicked.connect(self.action_add_folder.trigger)
        self.add_files_button = box.add_files_button
        self.add_files_button.clicked.connect(self._on_add_files_clicked)
        self.remove_button = box.remove_button
        self.remove_button.clicked.connect(self._on_remove_input_clicked)
        self.samples_button = box.samples_button
        self.samples_button.clicked.connect(self.action_samples.trigger)
        self.patterns_edit = box.patterns_edit
        self.recursive_check = box.recursive_check
        self.axes_edit = box.axes_edit
        self.scenes_edit = box.scenes_edit
        self.channel_spin = box.channel_spin
        box.filters_changed.connect(self._on_inputs_changed)
        self.expect_label = QLabel("Choose a model.")
        self.expect_label.setObjectName("expectations")
        self.expect_label.setWordWrap(True)
        self.expect_label.setTextFormat(Qt.TextFormat.RichText)
        return box

    def fill_cluster_choices(self) -> None:
        """List where runs can go (the cluster setting's choice selected)."""
        self.run_panel.fill_cluster_choices()

    # ------------------------------------------------------------------- models

    def set_library(self, library: Library) -> None:
        """Offer the installed models of the library (keeps the current choice)."""
        current = self.model_combo.currentData()
        self._items = [i for i in library.items if i.installed]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for item in self._items:
            label = item.name if item.origin != "builtin" else f"{item.name} (built in)"
            self.model_combo.addItem(label, item.item_id)
        wanted = self._pending_model or current
        index = self.model_combo.findData(wanted) if wanted else -1
        self.model_combo.setCurrentIndex(index if index >= 0 else 0 if self._items else -1)
        self.model_combo.blockSignals(False)
        self._pending_model = None
        if self.model_combo.currentData() != current or self.package is None:
            self._on_model_changed()

    def choose_model(self, item: LibraryItem) -> None:
        """Use this installed model for the run."""
        index = self.model_combo.findData(item.item_id)
        if index < 0:
            self._pending_model = item.item_id
            return
        if index == self.model_combo.currentIndex() and self.package is not None:
            return
        self.model_combo.setCurrentIndex(index)

    def current_item(self) -> LibraryItem | None:
        item_id = self.model_combo.currentData()
        return next((i for i in self._items if i.item_id == item_id), None)

    def _on_model_changed(self, *_args: Any) -> None:
        item = self.current_item()
        self.package = None
        self.objects_box.set_spec(None)
        self.preview_panel.clear()
        self._update_buttons()
        if item is None or item.description_path is None:
            self.expect_label.setText("Choose a model (install one in the library).")
            return
        self.expect_label.setText(f"Loading {item.name}…")
        path = item.description_path
        self.runner.start(
            lambda _cancel: (item.item_id, self.services.load_package(path)),
            f"loading {item.name}",
            on_result=self._on_model_package_loaded,
            on_error=self._on_model_package_failed,
        )

    def _on_model_package_loaded(self, result: tuple[str, ModelPackage]) -> None:
        item_id, package = result
        if item_id != self.model_combo.currentData():
            return
        self.package = package
        try:
            lines = self.services.model_expectations(package)
        except Exception as exc:
            lines = [readable_message(exc)]
        outputs = ", ".join(f"{t.id} ({t.axes_letters})" for t in package.spec.outputs)
        tensor = next((t for t in package.spec.inputs if not t.optional), None)
        name = tensor.id if tensor else "input"
        self.expect_label.setText(
            f"<b>{name}</b> ({tensor.axes_letters if tensor else ''}): "
            + "; ".join(lines)
            + f"<br>Outputs: {outputs}"
        )
        self.objects_box.set_spec(package.spec)
        self.model_loaded.emit(package.spec.name)
        self._update_buttons()
        self.rescan()

    def _on_model_package_failed(self, exc: BaseException) -> None:
        self.expect_label.setText(f"<span style='color:#c0392b'>{readable_message(exc)}</span>")
        report_error(self, "Cannot load the model", exc, self.services.log_file)

    # ------------------------------------------------------------------- inputs

    def inputs(self) -> list[Path]:
        """The folders and files chosen as inputs."""
        return self.inputs_box.inputs()

    def add_inputs(self, paths: list[Path]) -> None:
        """Add folders or files to the inputs and scan them."""
        if self.running:
            return
        self.inputs_box.add(paths)
        self._on_input_list_changed()

    def _on_input_list_changed(self) -> None:
        self.output_folder.follow_inputs(self._default_output())
        self.rescan()

    def _default_output(self) -> Path | None:
        """The output folder that goes with the inputs (a new one for every choice)."""
        inputs = self.inputs()
        if not inputs:
            return None
        try:
            samples = self.services.demo_images_dir()
        except Exception:
            samples = None
        return self.services.default_output_folder(
            inputs[0], samples=samples, stamp=datetime.now().strftime("%Y%m%d-%H%M%S")
        )

    def _on_add_folder_triggered(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images")
        if folder:
            self.add_inputs([Path(folder)])

    def _on_add_files_clicked(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self,
            "Add images",
            "",
            "Images (*.tif *.tiff *.png *.jpg *.jpeg *.bmp *.npy);;All files (*)",
        )
        if files:
            self.add_inputs([Path(f) for f in files])

    def _on_remove_input_clicked(self) -> None:
        self.inputs_box.remove_selected()
        self._on_input_list_changed()

    def _on_samples_triggered(self) -> None:
        try:
            samples = self.services.demo_images_dir()
        except Exception as exc:
            report_error(self, "No sample images", exc, self.services.log_file)
            return
        demo = next((i for i in self._items if i.origin == "builtin"), None)
        if demo is not None and self.current_item() is None:
            self.choose_model(demo)
        self.inputs_list.clear()
        # The samples' results never go into a folder chosen for real images.
        self.output_folder.forget_choice()
        self.add_inputs([samples])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        data = event.mimeData()
        if not self.running and data.hasUrls() and all(u.isLocalFile() for u in data.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        if self.running:
            event.ignore()
            return
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        self.add_inputs(paths)

    def _on_inputs_changed(self, *_args: Any) -> None:
        self.rescan()

    def rescan(self) -> None:
        """List the files of the inputs again (off the GUI thread)."""
        if self._scan is not None:
            self._scan.cancel()
        self._scan_generation += 1
        generation = self._scan_generation
        self.table.setRowCount(0)
        self._infos = []
        self._show_problems([])
        if not self.running:
            # Other files: the last run's counts and progress are not theirs.
            self.run_panel.show_idle()
            self.status_label.setText("Ready.")
        inputs = self.inputs()
        if not inputs:
            self.files_label.setText(_NO_INPUTS)
            self._scan = None
            self._update_buttons()
            return
        self.files_label.setText("Looking for images…")
        patterns, recursive = self.inputs_box.patterns(), self.recursive_check.isChecked()
        axes, channels, package = self.inputs_box.axes(), self.inputs_box.channels(), self.package
        scenes = self.inputs_box.scenes()

        def task(cancel: Any) -> Any:
            for info in self.services.scan_inputs(
                inputs,
                patterns=patterns,
                recursive=recursive,
                package=package,
                axes=axes,
                channels=channels,
                scenes=scenes,
                cancel=cancel,
            ):
                yield generation, info
            return generation

        self._scan = self.runner.start(
            task,
            "scan",
            on_event=self._on_input_found,
            on_result=self._on_scan_done,
            on_error=self._on_scan_failed,
        )
        self._update_buttons()

    def _on_input_found(self, event: tuple[int, InputInfo]) -> None:
        generation, info = event
        if generation != self._scan_generation:
            return
        self._infos.append(info)
        self.table.add_input(info)
        if info.problem:
            self._add_problem(info.problem)

    def _on_scan_done(self, generation: int) -> None:
        if generation != self._scan_generation:
            return
        self._scan = None
        usable = sum(1 for i in self._infos if i.ok)
        problems = len(self._infos) - usable
        text = f"{len(self._infos)} file(s) found"
        if self.package is not None:
            text += f", {usable} fit the model"
        if problems:
            text += f", {problems} with problems (see Problems; they will be listed as failed)"
        self.files_label.setText(text + ".")
        if self.table.rowCount() and not self.table.selectedItems():
            self.table.selectRow(0)
        self._update_buttons()
        self.scan_finished.emit(len(self._infos))

    def _on_scan_failed(self, exc: BaseException) -> None:
        self._scan = None
        self.files_label.setText(f"Cannot list the inputs: {readable_message(exc)}")
        self._update_buttons()

    def row_of(self, path: Path, scene: str | None = None) -> int:
        """The table row of an input (a file, or one scene of it); a row is added for an
        input not listed yet."""
        return self.table.row_of(path, scene)

    def _show_problems(self, problems: list[str]) -> None:
        self.failures_list.clear()
        for problem in problems:
            self._add_problem(problem)
        self._title_problems()

    def _add_problem(self, text: str) -> None:
        self.failures_list.addItem(text)
        self._title_problems()

    def _title_problems(self) -> None:
        count = self.failures_list.count()
        self.side_tabs.setTabText(TAB_PROBLEMS, f"Problems ({count})" if count else "Problems")

    # ------------------------------------------------------------------ preview

    def selected_path(self) -> Path | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else (0 if self.table.rowCount() else -1)
        return self.table.path_at(row) if row >= 0 else None

    def selected_series(self) -> int:
        """The series (scene) of the selected row's file; 0 for single-series files."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else 0
        return self._infos[row].series if 0 <= row < len(self._infos) else 0

    def _on_file_selected(self) -> None:
        path = self.selected_path()
        if path is not None:
            self.preview_panel.show_file(path, self.selected_series(), self.inputs_box.axes())

    def _on_preview_triggered(self) -> None:
        self.run_preview()

    def run_preview(self) -> None:
        """Run the model on the selected image (or the chosen region of it)."""
        path = self.selected_path()
        if path is None or self.package is None:
            return
        self.side_tabs.setCurrentIndex(TAB_PREVIEW)
        self.preview_panel.run_preview(
            self.package,
            str(self.device_combo.currentData()),
            path,
            series=self.selected_series(),
            axes=self.inputs_box.axes(),
            channels=self.inputs_box.channels(),
        )
        self._update_buttons()

    # ---------------------------------------------------------------------- run

    @property
    def scanning(self) -> bool:
        """True while the inputs are being listed."""
        return self._scan is not None

    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._run is not None and not self._run.done and not self._run_over

    def _on_objects_changed(self) -> None:
        summary = self.objects_box.summary()
        warn = " ⚠" if self.objects_box.problem() else ""
        self.side_tabs.setTabText(
            TAB_OBJECTS, "Objects" if summary == "off" else f"Objects ({summary}){warn}"
        )
        self._update_buttons()

    def _on_start_triggered(self) -> None:
        self.start_run(overwrite=self.overwrite_check.isChecked())

    def _on_resume_triggered(self) -> None:
        self.start_run(overwrite=False)

    def _on_cancel_triggered(self) -> None:
        self.cancel_run()

    def start_run(self, *, overwrite: bool = False) -> None:
        """Run the model over every input file, off the GUI thread.

        The output folder is looked at first: when it holds another run that this one
        would leave out of the record or mix with, :attr:`earlier_dialog` asks whether
        to run into a new folder or add to that run.
        """
        if self.running or self._checking or self.package is None or not self.inputs():
            return
        if self.output_folder.folder() is None:
            self.output_folder.browse()
        output = self.output_folder.folder()
        if output is None:
            return
        try:
            instances = self.objects_box.resolved()
        except Exception as exc:
            self.side_tabs.setCurrentIndex(TAB_OBJECTS)
            self.status_label.setText(f"Objects: {readable_message(exc)}")
            return
        request = self.services.prediction_request(
            model=self.package,
            inputs=self.inputs(),
            output_dir=output,
            device=str(self.device_combo.currentData()),
            patterns=self.inputs_box.patterns(),
            recursive=self.recursive_check.isChecked(),
            axes=self.inputs_box.axes(),
            channels=self.inputs_box.channels(),
            scenes=self.inputs_box.scenes(),
            overwrite=overwrite,
            instances=instances,
        )
        package = self.package
        self._checking = True
        self.status_label.setText("Checking the output folder…")
        self._update_buttons()
        self.runner.start(
            lambda _cancel: self.services.earlier_run(request, package),
            "output folder check",
            on_result=lambda earlier: self._on_output_checked(request, earlier),
            on_error=self._on_output_check_failed,
        )

    def _on_output_checked(self, request: PredictionRequest, earlier: EarlierRun | None) -> None:
        if earlier is None or not earlier.needs_a_choice(overwrite=request.overwrite):
            self._checking = False
            self._launch(request)
            return
        new_folder = self.services.fresh_folder(Path(request.output_dir))
        dialog = EarlierRunDialog(earlier, new_folder, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(
            lambda _result: self._on_earlier_answered(dialog.choice(), request, new_folder)
        )
        self.earlier_dialog = dialog
        dialog.open()

    def _on_earlier_answered(
        self, choice: str, request: PredictionRequest, new_folder: Path
    ) -> None:
        self.earlier_dialog = None
        self._checking = False
        if choice == "new":
            self.output_folder.set_folder(new_folder, by_hand=self.output_folder.chosen_by_hand)
            self._launch(replace(request, output_dir=new_folder))
        elif choice == "add":
            self._launch(replace(request, add_to_earlier=True))
        else:
            self.status_label.setText("Not started: the output folder holds another run.")
            self._update_buttons()

    def _on_output_check_failed(self, exc: BaseException) -> None:
        self._checking = False
        self.status_label.setText(f"Not started: {readable_message(exc)}")
        self._update_buttons()
        report_error(self, "The run could not start", exc, self.services.log_file)

    def _launch(self, request: PredictionRequest) -> None:
        self._show_problems([])
        self.table.set_waiting()
        cluster = str(self.cluster_combo.currentData() or "")
        self.run_panel.show_starting(
            self.table.rowCount(),
            f"Starting: connecting to {self.cluster_combo.currentText()}…"
            if cluster
            else "Starting: loading the model…",
        )
        self.last_record = None
        self._run_over = False
        self._run = self.runner.start(
            lambda cancel: self.services.run_prediction(request, cancel, cluster),
            "batch run",
            on_event=self._on_run_event,
            on_error=self._on_run_failed,
            on_finished=self._on_run_ended,
        )
        self._update_buttons()
        self.running_changed.emit(True)

    def cancel_run(self) -> None:
        """Ask the run to stop after the current block; finished files are kept."""
        if self._run is not None:
            self._run.cancel()
            self.status_label.setText("Cancelling after the current block…")
            self._update_buttons()

    def _on_run_event(self, event: Any) -> None:
        kind = type(event).__name__
        handler = getattr(self, f"_on_{_snake(kind)}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, event: Any) -> None:
        self.record_path = Path(event.record_path)
        self.run_panel.show_run_started(event)

    def _on_file_started(self, event: Any) -> None:
        row = self.row_of(event.path, event.scene)
        self.table.set_cell(row, COL_STATUS, "running…")
        self.run_panel.show_file_started()
        cell = self.table.item(row, COL_FILE)
        if cell is not None:
            self.table.scrollToItem(cell)

    def _on_block_progress(self, event: Any) -> None:
        self.run_panel.show_block_progress(event.done, event.total)

    def _on_file_finished(self, event: Any) -> None:
        entry: FileEntry = event.entry
        self.table.show_entry(entry)
        if entry.status == "failed":
            self._add_problem(entry.error or f"{event.path}: failed")
        self.run_panel.count_file(entry)

    def _on_run_finished(self, event: Any) -> None:
        record: RunRecord = event.record
        self.last_record = record
        self._run_over = True
        verdict = self.run_panel.show_run_finished(record)
        # Files the run never reached (cancelled) get their final status too.
        for entry in record.files:
            self.table.show_entry(entry)
        self._update_buttons()
        self.lasting_message.emit(f"Run {verdict.lower()}: the outputs are in {record.path.parent}")
        self.run_finished.emit(record)

    def _on_run_failed(self, exc: BaseException) -> None:
        self._run_over = True
        self.run_panel.show_run_failed(readable_message(exc))
        for row in range(self.table.rowCount()):
            self.table.set_cell(row, COL_STATUS, "")
        report_error(self, "The run could not start", exc, self.services.log_file)
        self.run_finished.emit(None)

    def _on_run_ended(self) -> None:
        self._run = None
        self._update_buttons()
        self.running_changed.emit(False)

    def _on_results_clicked(self) -> None:
        if self.record_path is not None:
            self.open_results_requested.emit(self.record_path)

    def _on_open_folder_clicked(self) -> None:
        folder = self.output_folder.folder()
        if folder is not None and folder.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _update_buttons(self) -> None:
        running = self.running
        busy = running or self._checking
        ready = self.package is not None and bool(self.inputs()) and self._scan is None
        objects_problem = self.objects_box.problem()
        objects_ok = objects_problem is None
        self.action_start.setEnabled(ready and not busy and objects_ok)
        self.start_button.setToolTip(f"Objects: {objects_problem}" if objects_problem else "")
        self.start_button.setEnabled(self.action_start.isEnabled())
        self.action_cancel.setEnabled(running)
        self.cancel_button.setEnabled(running)
        record = self.last_record
        resumable = record is not None and any(f.status == "not done" for f in record.files)
        self.action_resume.setEnabled(ready and not busy and resumable and objects_ok)
        self.resume_button.setEnabled(self.action_resume.isEnabled())
        can_preview = self.package is not None and self.table.rowCount() > 0
        self.action_preview.setEnabled(can_preview and not self.preview_panel.busy)
        self.preview_button.setEnabled(self.action_preview.isEnabled())
        self.results_button.setEnabled(record is not None and not running)
        self.results_button.setDefault(record is not None and not running)
        output = self.output_folder.folder()
        self.open_folder_button.setEnabled(output is not None and output.is_dir())
        self.action_add_folder.setEnabled(not busy)
        self.action_samples.setEnabled(not busy)
        for widget in (*self.inputs_box.controls(), self.objects_box, *self.run_panel.controls()):
            widget.setEnabled(not busy)


def _snake(name: str) -> str:
    """``RunStarted`` -> ``run_started``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
