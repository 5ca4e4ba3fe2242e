"""The model library page: every reachable model in one searchable list, and its details."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._flow_layout import flow_widget
from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import NO_CONNECTION, readable_message, report_error
from zoodesk.gui.library_details import ModelDetailsWidget
from zoodesk.gui.library_list import ModelListWidget
from zoodesk.gui.services import Services
from zoodesk.gui.wording import in_gui_words, rich_tooltip

if TYPE_CHECKING:
    from zoodesk.inference.checks import TestStatus
    from zoodesk.models.authors import Author
    from zoodesk.models.import_kind import ImportKind
    from zoodesk.models.library import Library, LibraryItem
    from zoodesk.models.package import ModelPackage

log = logging.getLogger(__name__)

_BUNDLE_SUFFIX = ".zdbundle"

DetailsResult = tuple[str, "ModelPackage", Any, "TestStatus | None", "tuple[Author, ...]"]


class LibraryWidget(QWidget):
    """Built-in, cached and catalogue models with filters, details and actions.

    Model zips, model folders and offline bundles dropped on the page are imported
    one after the other.

    Parameters
    ----------
    services
        The engine.
    runner
        Runs every long task (loading, importing, testing, downloading).
    """

    #: The library was (re)built; carries the :class:`zoodesk.models.library.Library`.
    library_changed = Signal(object)
    #: The details of the selected model are shown (the item id).
    details_loaded = Signal(str)
    #: A reproducibility test ended (the item id and the status text shown).
    test_finished = Signal(str, str)
    #: An import, download or bundle import installed a model (its item id).
    model_installed = Signal(str)
    #: The user asked to run the selected installed model on images.
    use_model_requested = Signal(object)
    #: A line for the status bar.
    status_message = Signal(str)

    def __init__(
        self, services: Services, runner: TaskRunner, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("libraryPage")
        self.services = services
        self.runner = runner
        self.library: Library | None = None
        self._package: ModelPackage | None = None
        self._shown_id: str | None = None
        self._select_after_refresh: str | None = None
        self._task: Worker | None = None
        self._task_item: str | None = None
        #: The item the task line speaks of (None: the library as a whole).
        self._message_item: str | None = None
        #: Dropped paths waiting for the running task to end.
        self._pending: list[tuple[ImportKind, Path]] = []
        self._details_compatibility: Any = None
        self.setAcceptDrops(True)
        self._build_actions()
        self._build_ui()
        self._update_buttons()

    # ---------------------------------------------------------------- building

    def _build_actions(self) -> None:
        self.action_import_folder = QAction(icon("folder"), "Import model &folder…", self)
        self.action_import_folder.setShortcut(QKeySequence("Ctrl+I"))
        self.action_import_folder.triggered.connect(self._on_import_folder_triggered)
        self.action_import_zip = QAction(icon("import"), "Import model &zip…", self)
        self.action_import_zip.setShortcut(QKeySequence("Ctrl+Shift+I"))
        self.action_import_zip.triggered.connect(self._on_import_zip_triggered)
        self.action_import_bundle = QAction(icon("bundle-import"), "Import offline &bundle…", self)
        self.action_import_bundle.triggered.connect(self._on_import_bundle_triggered)
        self.action_export_bundle = QAction(
            icon("bundle-export"), "&Export selected model as bundle…", self
        )
        self.action_export_bundle.triggered.connect(self._on_export_bundle_triggered)
        self.action_refresh_catalogue = QAction(icon("refresh"), "&Refresh zoo catalogue", self)
        self.action_refresh_catalogue.setShortcut(QKeySequence("F5"))
        self.action_refresh_catalogue.triggered.connect(self._on_refresh_catalogue_triggered)
        self.action_test = QAction(icon("test"), "Run &test", self)
        self.action_test.setShortcut(QKeySequence("Ctrl+T"))
        self.action_test.setToolTip("Run the model's own test images and compare the outputs")
        self.action_test.triggered.connect(self._on_test_triggered)

    def _build_ui(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_list())
        splitter.addWidget(self._build_details())
        splitter.setChildrenCollapsible(False)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([520, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def _build_list(self) -> QWidget:
        """Search, filters and the list of models."""
        self.model_list = ModelListWidget(
            self.services,
            (self.action_import_folder, self.action_import_zip, self.action_import_bundle),
            self.action_refresh_catalogue,
        )
        self.model_list.filters_changed.connect(self._on_filter_changed)
        self.model_list.current_changed.connect(self._on_current_item_changed)
        self.model_list.item_activated.connect(self._on_item_double_clicked)
        # The list's controls, by the names the rest of the application and its tests use.
        self.search_edit = self.model_list.search_edit
        self.show_combo = self.model_list.show_combo
        self.dims_combo = self.model_list.dims_combo
        self.runnable_check = self.model_list.runnable_check
        self.tree = self.model_list.tree
        self.catalogue_label = self.model_list.catalogue_label
        self.count_label = self.model_list.count_label
        return self.model_list

    def _build_details(self) -> QWidget:
        """The details pane with the action buttons and the task line."""
        self.use_button = QPushButton(icon("batch"), "Use for a batch run")
        self.use_button.setObjectName("useButton")
        self.use_button.clicked.connect(self._on_use_clicked)
        self.download_button = QPushButton(icon("download"), "Download")
        self.download_button.clicked.connect(self._on_download_clicked)
        self.test_button = QPushButton(icon("test"), "Run test")
        self.test_button.setObjectName("testButton")
        self.test_button.clicked.connect(self.action_test.trigger)
        self.convert_button = QPushButton(icon("convert"), "Convert to ONNX")
        self.convert_button.clicked.connect(self._on_convert_clicked)
        self.remove_button = QPushButton(icon("remove"), "Remove")
        self.remove_button.setObjectName("removeButton")
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.bundle_button = QPushButton(icon("bundle-export"), "Export bundle…")
        self.bundle_button.clicked.connect(self.action_export_bundle.trigger)
        # The buttons wrap onto a second row in a narrow window rather than being cut off.
        actions = flow_widget(
            [
                self.use_button,
                self.download_button,
                self.test_button,
                self.convert_button,
                self.bundle_button,
                self.remove_button,
            ]
        )

        self.task_label = QLabel("")
        self.task_label.setObjectName("taskLabel")
        self.task_label.setWordWrap(True)
        self.task_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.task_progress = QProgressBar()
        self.task_progress.setVisible(False)
        self.task_cancel = QPushButton(icon("cancel"), "Cancel")
        self.task_cancel.setVisible(False)
        self.task_cancel.clicked.connect(self._on_task_cancel_clicked)
        task_area = QWidget()
        task_layout = QVBoxLayout(task_area)
        task_layout.setContentsMargins(0, 0, 0, 0)
        task_layout.addWidget(self.task_label)
        task_row = QHBoxLayout()
        task_row.addWidget(self.task_progress, 1)
        task_row.addWidget(self.task_cancel)
        task_layout.addLayout(task_row)

        self.details = ModelDetailsWidget(actions, task_area)
        # The pane's labels, by the names the rest of the application and its tests use.
        self.cover_label = self.details.cover_label
        self.name_label = self.details.name_label
        self.subtitle_label = self.details.subtitle_label
        self.description_label = self.details.description_label
        self.field_labels = self.details.field_labels
        return self.details

    # ---------------------------------------------------------------- library

    def refresh(self, select: str | None = None) -> None:
        """Rebuild the list from the cache and the saved catalogue (off the GUI thread)."""
        self._select_after_refresh = select or self._shown_id
        self.runner.start(
            lambda _cancel: self.services.library(),
            "library",
            on_result=self._on_library_loaded,
            on_error=self._on_library_failed,
        )

    def _on_library_loaded(self, library: Library) -> None:
        self.library = library
        self.model_list.set_library(library)
        self._fill_list(reload=True)
        self.library_changed.emit(library)

    def _on_library_failed(self, exc: BaseException) -> None:
        self.model_list.show_failure()
        report_error(self, "Cannot read the model library", exc, self.services.log_file)

    def _on_filter_changed(self, *_args: Any) -> None:
        self._fill_list()

    def visible_items(self) -> list[LibraryItem]:
        """The items the list shows under the current search and filters."""
        return self.model_list.visible_items()

    def _fill_list(self, reload: bool = False) -> None:
        """Show the items matching the filters; keep the selection where possible.

        ``reload``: the library was rebuilt, so the selected item's details are
        shown again even if the same item stays selected.
        """
        wanted = self._select_after_refresh or self._shown_id
        self._select_after_refresh = None
        self.model_list.fill(wanted)
        chosen = self.current_item()
        if chosen is None:
            self._show_item(None)
        elif reload or chosen.item_id != self._shown_id:
            self._show_item(chosen)

    def current_item(self) -> LibraryItem | None:
        """The selected library item."""
        return self.model_list.current_item()

    def select_item(self, item_id: str) -> bool:
        """Select the item with this id if the list shows it."""
        return self.model_list.select_item(item_id)

    def _on_current_item_changed(self, *_args: Any) -> None:
        self._show_item(self.current_item())

    def _on_item_double_clicked(self, *_args: Any) -> None:
        item = self.current_item()
        if item is not None and item.installed:
            self.use_model_requested.emit(item)

    # ----------------------------------------------------------------- details

    def _show_item(self, item: LibraryItem | None) -> None:
        self._package = None
        self._details_compatibility = None
        new_id = item.item_id if item else None
        if self._task is None and new_id != self._message_item:
            # What the last task said belongs to the model it ran on.
            self.task_label.setText("")
            self._message_item = None
        self._shown_id = new_id
        if item is None:
            self.details.clear()
            self._update_buttons()
            return
        compat = item.compatibility
        dims = f"{compat.spatial_dims}D model; " if compat.spatial_dims else ""
        self.details.show_item(item, f"{dims}{in_gui_words(compat.reason)}")
        if item.installed:
            shown = item
            self.runner.start(
                lambda _cancel: self._load_details(shown),
                f"details of {item.name}",
                on_result=self._on_details_loaded,
                on_error=self._on_details_failed,
            )
        else:
            self.details_loaded.emit(item.item_id)
        self._update_buttons()

    def _load_details(self, item: LibraryItem) -> DetailsResult:
        """Runs on a pool thread: load the package, its test status and its authors."""
        from zoodesk.errors import ZooDeskError
        from zoodesk.models.authors import authors_of_description

        assert item.description_path is not None
        package = self.services.load_package(item.description_path)
        formats = item.cached.weights_formats if item.cached else None
        compat = self.services.compatibility(package, formats)
        status = self.services.test_status(package.description_path)
        try:
            authors = authors_of_description(package.description_path)
        except (OSError, ZooDeskError):
            authors = ()  # the validated names are shown instead
        return item.item_id, package, compat, status, authors

    def _on_details_loaded(self, result: DetailsResult) -> None:
        item_id, package, compat, status, authors = result
        if item_id != self._shown_id:
            return  # the user moved on
        self._package = package
        self._details_compatibility = compat
        capability = self.services.capability(compat)
        dims = f"{compat.spatial_dims}D model; " if compat.spatial_dims else ""
        problem = (
            self.services.conversion_unavailable(compat.weights_format)
            if capability.verdict.startswith("needs") and compat.weights_format
            else None
        )
        reason = in_gui_words(capability.reason)
        can_html = html.escape(f"{capability.verdict}: {dims}{reason}") + (
            f"<br><i>{html.escape(in_gui_words(problem))}</i>" if problem else ""
        )
        self.details.show_package(package.spec, can_html, authors)
        self.details.show_test_status(status)
        self.details.show_cover(package)
        self._update_buttons()
        self.details_loaded.emit(item_id)

    def _on_details_failed(self, exc: BaseException) -> None:
        self.details.show_load_error(readable_message(exc))
        log.warning("cannot load model details: %s", exc)
        self._update_buttons()
        self.details_loaded.emit(self._shown_id or "")

    def test_status_text(self) -> str:
        """The test status as shown (plain text)."""
        return self.details.test_status_text()

    def _update_buttons(self) -> None:
        item = self.current_item()
        busy = self._task is not None
        installed = item is not None and item.installed
        runnable_now = installed and item is not None and item.compatibility.action == "run"
        self.use_button.setEnabled(bool(runnable_now))
        self.test_button.setEnabled(bool(runnable_now and self._package is not None and not busy))
        self.action_test.setEnabled(self.test_button.isEnabled())
        self.download_button.setVisible(item is not None and not item.installed)
        self.download_button.setEnabled(
            item is not None
            and not busy
            and item.download_ref is not None
            and item.compatibility.runnable
        )
        if item is not None and not item.installed and not item.compatibility.runnable:
            self.download_button.setToolTip(rich_tooltip(in_gui_words(item.compatibility.reason)))
        else:
            self.download_button.setToolTip("Download the model into the local cache")
        # The loaded package knows more than the manifest (e.g. missing architecture code).
        compat = (
            self._details_compatibility
            if self._package is not None and self._details_compatibility is not None
            else (item.compatibility if item is not None else None)
        )
        needs_conversion = bool(
            installed and compat is not None and compat.action.startswith("convert")
        )
        self.convert_button.setVisible(needs_conversion)
        problem = ""
        if needs_conversion and compat is not None and compat.weights_format:
            problem = self.services.conversion_unavailable(compat.weights_format) or ""
        # Enabled once the package is loaded: only then are its code and files known.
        loaded = self._details_compatibility is not None
        self.convert_button.setEnabled(needs_conversion and loaded and not busy and not problem)
        what = "Convert the weights to ONNX, then run the model's own test"
        self.convert_button.setToolTip(rich_tooltip(in_gui_words(problem) or what))
        cached = item is not None and item.cached is not None
        self.remove_button.setVisible(cached)
        self.remove_button.setEnabled(cached and not busy)
        self.bundle_button.setVisible(cached)
        self.action_export_bundle.setEnabled(cached and not busy)

    # ----------------------------------------------------------------- tasks

    def _start_task(
        self,
        task: Any,
        name: str,
        item_id: str | None,
        *,
        cancellable: bool = False,
        **callbacks: Any,
    ) -> None:
        self._task_item = item_id
        self._tell(f"{name}…", item_id)
        self.task_progress.setVisible(True)
        self.task_progress.setRange(0, 0)
        self._task = self.runner.start(task, name, on_finished=self._on_task_finished, **callbacks)
        self.task_cancel.setVisible(cancellable)
        self._update_buttons()

    def _on_task_finished(self) -> None:
        self._task = None
        self.task_progress.setVisible(False)
        self.task_cancel.setVisible(False)
        self._update_buttons()
        if self._pending:
            kind, path = self._pending.pop(0)
            self._import_path(kind, path)

    def _on_task_cancel_clicked(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.task_label.setText("Cancelling…")

    def _tell(self, text: str, item_id: str | None) -> None:
        """Show what a task says about a model (``item_id``) or the library (None).

        A line about a model other than the one shown goes to the status bar
        instead, so that it never stands under an unrelated model.
        """
        if item_id is not None and item_id != self._shown_id:
            self.status_message.emit(text)
            if self._message_item == item_id:
                self.task_label.setText("")
                self._message_item = None
            return
        self.task_label.setText(text)
        self._message_item = item_id

    def _task_name(self) -> str:
        item = self.library.get(self._task_item) if self.library and self._task_item else None
        return item.name if item is not None else "the model"

    @property
    def busy(self) -> bool:
        """True while an import, test, download or bundle task runs."""
        return self._task is not None

    # import

    def _on_import_folder_triggered(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a model folder")
        if folder:
            self.import_model(Path(folder))

    def _on_import_zip_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a model zip", "", "Model packages (*.zip *.yaml *.yml)"
        )
        if path:
            self.import_model(Path(path))

    def import_model(self, path: Path) -> None:
        """Copy a model package into the cache (checksums checked), then select it."""
        self._start_task(
            lambda _cancel: self.services.import_model(path),
            f"Importing {path.name}",
            None,
            on_result=self._on_model_imported,
            on_error=self._on_import_failed,
        )

    def _on_model_imported(self, model: Any) -> None:
        item_id = f"cache:{model.key}"
        self._select_after_refresh = item_id
        lines = [f"Imported {model.name} as {model.key}."]
        lines += [f"Note: {note}" for note in model.notes]
        # The imported model is selected next: the line is about it.
        self.task_label.setText("\n".join(lines))
        self._message_item = item_id
        self.status_message.emit(f"Imported {model.name}")
        self.refresh(select=item_id)
        self.model_installed.emit(item_id)

    def _on_import_failed(self, exc: BaseException) -> None:
        self._tell("Import failed.", None)
        report_error(self, "Import failed", exc, self.services.log_file)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        # Local files only; what they are is told on the drop, with a message.
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if not self.import_paths(paths):
            event.ignore()
            return
        event.acceptProposedAction()

    def import_paths(self, paths: list[Path]) -> bool:
        """Import model zips, model folders and bundles, one after the other.

        Anything else is refused with a message naming it.  Returns False when
        nothing could be imported.
        """
        from zoodesk.models.import_kind import IMPORTABLE, import_kind

        wanted = [(kind, p) for p in paths if (kind := import_kind(p)) is not None]
        refused = [p.name or str(p) for p in paths if import_kind(p) is None]
        if refused:
            text = f"Not imported: {', '.join(refused)}: the library takes {IMPORTABLE}."
            self._tell(text, None)
            self.status_message.emit(text)
        for kind, path in wanted:
            if self.busy:
                self._pending.append((kind, path))
            else:
                self._import_path(kind, path)
        return bool(wanted)

    def _import_path(self, kind: ImportKind, path: Path) -> None:
        if kind == "bundle":
            self.import_bundle(path)
        else:
            self.import_model(path)

    # bundles

    def _on_import_bundle_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import an offline bundle", "", f"ZooDesk bundles (*{_BUNDLE_SUFFIX} *.zip)"
        )
        if path:
            self.import_bundle(Path(path))

    def import_bundle(self, path: Path) -> None:
        """Install the models and the catalogue of an offline bundle."""
        self._start_task(
            lambda _cancel: self.services.import_bundle(path),
            f"Importing bundle {path.name}",
            None,
            on_result=self._on_bundle_imported,
            on_error=self._on_bundle_failed,
        )

    def _on_bundle_imported(self, result: Any) -> None:
        names = ", ".join(m.name for m in result.models) or "no models"
        select = f"cache:{result.models[0].key}" if result.models else None
        # The first model is selected next: the line stays with it.
        self.task_label.setText(f"Installed {names}. {result.catalogue_note}.")
        self._message_item = select
        self.refresh(select=select)
        if select:
            self.model_installed.emit(select)

    def _on_bundle_failed(self, exc: BaseException) -> None:
        self._tell("Bundle task failed.", None)
        report_error(self, "Bundle task failed", exc, self.services.log_file)

    def _on_export_bundle_triggered(self) -> None:
        item = self.current_item()
        if item is None or item.cached is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export an offline bundle",
            f"{item.cached.key}{_BUNDLE_SUFFIX}",
            f"ZooDesk bundles (*{_BUNDLE_SUFFIX})",
        )
        if not path:
            return
        key = item.cached.key
        self._start_task(
            lambda _cancel: self.services.export_bundle(Path(path), [key]),
            f"Writing bundle {Path(path).name}",
            item.item_id,
            on_result=self._on_bundle_exported,
            on_error=self._on_bundle_failed,
        )

    def _on_bundle_exported(self, result: Any) -> None:
        size = result.size / 1e6
        self._tell(f"Wrote {result.path} ({size:.1f} MB).", self._task_item)
        self.status_message.emit(f"Bundle written: {result.path}")

    # test

    def _on_test_triggered(self) -> None:
        self.run_test()

    def run_test(self) -> None:
        """Run the selected model's reproducibility test on the default device."""
        item = self.current_item()
        package = self._package
        if item is None or package is None or self.busy:
            return
        device = self.services.settings.device
        self.details.show_test_running()
        self._start_task(
            lambda _cancel: (item.item_id, self.services.run_test(package, device)),
            f"Testing {item.name}",
            item.item_id,
            on_result=self._on_test_done,
            on_error=self._on_test_failed,
        )

    def _on_test_done(self, result: tuple[str, TestStatus]) -> None:
        item_id, status = result
        if item_id == self._shown_id:
            self._tell(f"Test {'passed' if status.passed else 'FAILED'}.", item_id)
            self.details.show_test_status(status)
        else:
            self._tell(f"Test of {self._task_name()}: {status.summary}.", item_id)
        self.test_finished.emit(item_id, status.summary)

    def _on_test_failed(self, exc: BaseException) -> None:
        item_id = self._task_item
        self._tell(f"The test of {self._task_name()} could not run.", item_id)
        if item_id == self._shown_id:
            self.details.show_test_failed_to_run()
        report_error(self, "The test could not run", exc, self.services.log_file)
        self.test_finished.emit(item_id or "", "could not run")

    # download

    def _on_download_clicked(self) -> None:
        item = self.current_item()
        if item is None or item.download_ref is None:
            return
        ref = item.download_ref
        self._start_task(
            lambda cancel: self.services.download_model(ref, cancel),
            f"Downloading {item.name}",
            item.item_id,
            cancellable=True,
            on_event=self._on_download_progress,
            on_result=self._on_download_done,
            on_error=self._on_download_failed,
        )

    def _on_download_progress(self, event: Any) -> None:
        # The line follows the task, whichever model is shown (it names what it fetches).
        self.task_label.setText(event.message)
        if event.total:
            scale = 1024 if event.unit == "bytes" else 1
            self.task_progress.setRange(0, max(1, int(event.total // scale)))
            self.task_progress.setValue(int(event.done // scale))
        else:
            self.task_progress.setRange(0, 0)

    def _on_download_done(self, _result: Any) -> None:
        # download_model returns None; its last event carries the installed model.
        self._tell(f"Downloaded {self._task_name()}.", self._task_item)
        self.refresh()
        self.model_installed.emit(self._task_item or "")

    def _on_download_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        name = self._task_name()
        if isinstance(exc, CancelledError):
            self._tell(
                f"Download of {name} cancelled; it resumes where it stopped next time.",
                self._task_item,
            )
            return
        self._tell(f"Download of {name} failed: {readable_message(exc)}", self._task_item)
        report_error(self, f"Download of {name} failed", exc, self.services.log_file)

    # catalogue

    def _on_refresh_catalogue_triggered(self) -> None:
        if not self.services.settings.network_enabled:
            QMessageBox.information(
                self,
                "Network is off",
                "Network access is turned off in the settings, so the catalogue cannot be "
                "refreshed. Turn it on in Settings, or import an offline bundle.",
            )
            return
        self._start_task(
            lambda cancel: self.services.refresh_catalogue(cancel),
            "Refreshing the zoo catalogue",
            None,
            cancellable=True,
            on_event=self._on_download_progress,
            on_result=self._on_catalogue_refreshed,
            on_error=self._on_catalogue_failed,
        )

    def _on_catalogue_refreshed(self, _result: Any) -> None:
        self._tell("Catalogue refreshed.", None)
        self.refresh()

    def _on_catalogue_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        if isinstance(exc, CancelledError):
            self._tell("Catalogue refresh cancelled; the saved catalogue is kept.", None)
            return
        message = readable_message(exc)
        kept = " The saved catalogue is kept." if self.library and self.library.catalogue else ""
        self._tell(f"{message}.{kept}" if message == NO_CONNECTION else message, None)
        report_error(
            self,
            "Cannot refresh the zoo catalogue",
            exc,
            self.services.log_file,
            message=f"{message}.{kept}" if message == NO_CONNECTION else None,
        )

    # convert, remove, use

    def _on_convert_clicked(self) -> None:
        item = self.current_item()
        if item is None or item.cached is None or not self.convert_button.isEnabled():
            return
        trust = False
        code = self.services.code_to_run(self._package) if self._package is not None else None
        if code is not None:
            answer = QMessageBox.question(
                self,
                "Run the model's code?",
                "Converting these weights runs Python code that comes with the model:\n\n"
                f"{code}\n\nIt runs in a separate process, with your permissions. Only "
                "continue if you trust where the model comes from.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            trust = True
        key = item.cached.key
        self._start_task(
            lambda cancel: self.services.convert_model(key, trust_code=trust, cancel=cancel),
            f"Converting {item.name}",
            item.item_id,
            cancellable=True,
            on_event=self._on_download_progress,
            on_result=self._on_converted,
            on_error=self._on_convert_failed,
        )

    def _on_convert_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        if isinstance(exc, CancelledError):
            self._tell("Conversion cancelled; the model is unchanged.", self._task_item)
            return
        self._tell("Conversion failed; the model is unchanged.", self._task_item)
        report_error(self, "Conversion failed", exc, self.services.log_file)

    def _on_converted(self, result: Any) -> None:
        # The conversion ran the model's own test on the converted weights.
        test = result.test
        worst = max((o.max_abs_diff for o in test.outputs), default=0.0)
        self._tell(
            f"Converted to ONNX; the model's test passed on {test.device} "
            f"(max abs diff {worst:.2g}).",
            self._task_item,
        )
        self.refresh()

    def _on_remove_clicked(self) -> None:
        item = self.current_item()
        if item is None or item.cached is None:
            return
        answer = QMessageBox.question(
            self,
            "Remove model",
            f"Remove {item.name} ({item.cached.key}) from this computer?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        key = item.cached.key
        self._start_task(
            lambda _cancel: self.services.remove_model(key),
            f"Removing {item.name}",
            item.item_id,
            on_result=self._on_removed,
            on_error=self._on_import_failed,
        )

    def _on_removed(self, model: Any) -> None:
        self._shown_id = None
        self._tell(f"Removed {model.name}.", None)
        self.refresh()

    def _on_use_clicked(self) -> None:
        item = self.current_item()
        if item is not None and item.installed:
            self.use_model_requested.emit(item)
