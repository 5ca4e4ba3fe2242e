"""The model library page: every reachable model in one searchable list, and its details."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._style import icon
from zoodesk.gui._worker import TaskRunner, Worker
from zoodesk.gui.errors import report_error
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.inference.checks import TestStatus
    from zoodesk.models.library import Library, LibraryItem
    from zoodesk.models.package import ModelPackage

log = logging.getLogger(__name__)

_SHOW_FILTERS = (("All models", "all"), ("Installed", "installed"), ("Zoo catalogue", "catalogue"))
_BUNDLE_SUFFIX = ".zdbundle"


def _html_list(values: list[str] | tuple[str, ...]) -> str:
    return ", ".join(html.escape(v) for v in values) if values else "<i>not stated</i>"


class LibraryWidget(QWidget):
    """Built-in, cached and catalogue models with filters, details and actions.

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
        # Left: search, filters and the list.
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("librarySearch")
        self.search_edit.setPlaceholderText("Search name, tags, authors…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._on_filter_changed)
        self.show_combo = QComboBox()
        for label, value in _SHOW_FILTERS:
            self.show_combo.addItem(label, value)
        self.show_combo.currentIndexChanged.connect(self._on_filter_changed)
        self.dims_combo = QComboBox()
        for label, dims in (("2D and 3D", None), ("2D", 2), ("3D", 3)):
            self.dims_combo.addItem(label, dims)
        self.dims_combo.currentIndexChanged.connect(self._on_filter_changed)
        self.runnable_check = QCheckBox("Runnable only")
        self.runnable_check.setToolTip("Only models ZooDesk can run, possibly after conversion")
        self.runnable_check.toggled.connect(self._on_filter_changed)

        self.tree = QTreeWidget()
        self.tree.setObjectName("modelList")
        self.tree.setHeaderLabels(["Model", "Source", "ZooDesk"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.tree.currentItemChanged.connect(self._on_current_item_changed)
        self.tree.itemDoubleClicked.connect(self._on_item_double_clicked)

        self.catalogue_label = QLabel("Loading the library…")
        self.catalogue_label.setObjectName("catalogueNote")
        self.catalogue_label.setWordWrap(True)
        self.catalogue_label.setStyleSheet("color: palette(placeholder-text);")
        self.count_label = QLabel("")

        refresh_button = QToolButton()
        refresh_button.setDefaultAction(self.action_refresh_catalogue)
        refresh_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        import_button = QToolButton()
        import_button.setDefaultAction(self.action_import_folder)
        import_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        import_button.setText("Import…")
        import_button.addAction(self.action_import_zip)
        import_button.addAction(self.action_import_bundle)
        import_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)

        filters = QHBoxLayout()
        filters.addWidget(self.show_combo)
        filters.addWidget(self.dims_combo)
        filters.addWidget(self.runnable_check)
        filters.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.search_edit, 1)
        top.addWidget(import_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(top)
        left_layout.addLayout(filters)
        left_layout.addWidget(self.tree, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.catalogue_label, 1)
        bottom.addWidget(refresh_button)
        left_layout.addWidget(self.count_label)
        left_layout.addLayout(bottom)

        # Right: the details of the selected model.
        self.cover_label = QLabel()
        self.cover_label.setObjectName("modelCover")
        self.cover_label.setFixedSize(QSize(300, 180))
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

        self.fields = QFormLayout()
        self.fields.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.field_labels: dict[str, QLabel] = {}
        for key, label in (
            ("can", "ZooDesk can"),
            ("test", "Test"),
            ("authors", "Authors"),
            ("license", "Licence"),
            ("cite", "Citation"),
            ("inputs", "Inputs"),
            ("outputs", "Outputs"),
            ("weights", "Weights"),
            ("where", "Location"),
        ):
            field_label = QLabel("")
            field_label.setObjectName(f"field_{key}")
            field_label.setWordWrap(True)
            field_label.setTextFormat(Qt.TextFormat.RichText)
            field_label.setOpenExternalLinks(True)
            field_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
            self.fields.addRow(f"{label}:", field_label)
            self.field_labels[key] = field_label

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
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.bundle_button = QPushButton(icon("bundle-export"), "Export bundle…")
        self.bundle_button.clicked.connect(self.action_export_bundle.trigger)
        buttons = QHBoxLayout()
        for b in (
            self.use_button,
            self.download_button,
            self.test_button,
            self.convert_button,
            self.bundle_button,
            self.remove_button,
        ):
            buttons.addWidget(b)
        buttons.addStretch(1)

        self.task_label = QLabel("")
        self.task_label.setObjectName("taskLabel")
        self.task_progress = QProgressBar()
        self.task_progress.setVisible(False)
        self.task_cancel = QPushButton(icon("cancel"), "Cancel")
        self.task_cancel.setVisible(False)
        self.task_cancel.clicked.connect(self._on_task_cancel_clicked)
        task_row = QHBoxLayout()
        task_row.addWidget(self.task_progress, 1)
        task_row.addWidget(self.task_cancel)

        detail = QWidget()
        detail.setObjectName("modelDetails")
        detail_layout = QVBoxLayout(detail)
        head = QHBoxLayout()
        head.addWidget(self.cover_label)
        titles = QVBoxLayout()
        titles.addWidget(self.name_label)
        titles.addWidget(self.subtitle_label)
        titles.addStretch(1)
        head.addLayout(titles, 1)
        detail_layout.addLayout(head)
        detail_layout.addWidget(self.description_label)
        detail_layout.addLayout(buttons)
        detail_layout.addWidget(self.task_label)
        detail_layout.addLayout(task_row)
        detail_layout.addLayout(self.fields)
        detail_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(detail)
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([520, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

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
        self.catalogue_label.setText(
            f"Zoo catalogue: {library.catalogue_note}"
            if library.catalogue is not None
            else "No zoo catalogue saved yet: refresh it when online, or import a bundle."
        )
        self._fill_list(reload=True)
        self.library_changed.emit(library)

    def _on_library_failed(self, exc: BaseException) -> None:
        self.catalogue_label.setText("The library could not be read.")
        report_error(self, "Cannot read the model library", exc, self.services.log_file)

    def _on_filter_changed(self, *_args: Any) -> None:
        self._fill_list()

    def visible_items(self) -> list[LibraryItem]:
        """The items the list shows under the current search and filters."""
        if self.library is None:
            return []
        return self.library.search(
            self.search_edit.text(),
            show=str(self.show_combo.currentData()),
            runnable_only=self.runnable_check.isChecked(),
            dims=self.dims_combo.currentData(),
        )

    def _fill_list(self, reload: bool = False) -> None:
        """Show the items matching the filters; keep the selection where possible.

        ``reload``: the library was rebuilt, so the selected item's details are
        shown again even if the same item stays selected.
        """
        wanted = self._select_after_refresh or self._shown_id
        self._select_after_refresh = None
        self.tree.blockSignals(True)
        self.tree.clear()
        current: QTreeWidgetItem | None = None
        items = self.visible_items()
        for item in items:
            capability = self.services.capability(item.compatibility)
            row = QTreeWidgetItem([item.name, item.origin_label, capability.label])
            row.setData(0, Qt.ItemDataRole.UserRole, item.item_id)
            row.setToolTip(0, item.description or item.name)
            row.setToolTip(2, capability.reason)
            row.setIcon(0, icon("library" if item.installed else "download"))
            if not item.compatibility.runnable:
                row.setForeground(2, self.palette().placeholderText())
            self.tree.addTopLevelItem(row)
            if item.item_id == wanted:
                current = row
        total = len(self.library.items) if self.library else 0
        self.count_label.setText(f"{len(items)} of {total} models")
        if current is None and self.tree.topLevelItemCount():
            current = self.tree.topLevelItem(0)
        if current is not None:
            self.tree.setCurrentItem(current)
        self.tree.blockSignals(False)
        chosen = self.current_item()
        if chosen is None:
            self._show_item(None)
        elif reload or chosen.item_id != self._shown_id:
            self._show_item(chosen)

    def current_item(self) -> LibraryItem | None:
        """The selected library item."""
        row = self.tree.currentItem()
        if row is None or self.library is None:
            return None
        return self.library.get(str(row.data(0, Qt.ItemDataRole.UserRole)))

    def select_item(self, item_id: str) -> bool:
        """Select the item with this id if the list shows it."""
        for i in range(self.tree.topLevelItemCount()):
            row = self.tree.topLevelItem(i)
            if row is not None and row.data(0, Qt.ItemDataRole.UserRole) == item_id:
                self.tree.setCurrentItem(row)
                return True
        return False

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
        if self._task is None and (item.item_id if item else None) != self._shown_id:
            # What the last task said belongs to the model it ran on.
            self.task_label.setText("")
        self._shown_id = item.item_id if item else None
        self.cover_label.clear()
        for value in self.field_labels.values():
            value.setText("")
        if item is None:
            self.name_label.setText("Select a model")
            self.subtitle_label.setText("")
            self.description_label.setText("")
            self._update_buttons()
            return
        self.name_label.setText(item.name)
        ident = " · ".join(
            part for part in (item.origin_label, item.model_id or "", item.version or "") if part
        )
        self.subtitle_label.setText(ident)
        self.description_label.setText(item.description or "")
        compat = item.compatibility
        dims = f"{compat.spatial_dims}D model; " if compat.spatial_dims else ""
        self.field_labels["can"].setText(html.escape(f"{dims}{compat.reason}"))
        self.field_labels["authors"].setText(_html_list(item.authors))
        self.field_labels["license"].setText(html.escape(item.license or "not stated"))
        self.field_labels["weights"].setText(_html_list(item.weights_formats))
        if item.installed:
            where = item.cached.root if item.cached else item.description_path
            self.field_labels["where"].setText(html.escape(str(where)))
            self.field_labels["test"].setText("<i>checking…</i>")
            self.cover_label.setText("…")
            shown = item
            self.runner.start(
                lambda _cancel: self._load_details(shown),
                f"details of {item.name}",
                on_result=self._on_details_loaded,
                on_error=self._on_details_failed,
            )
        else:
            entry = item.entry
            self.cover_label.setText("Cover shown\nafter download")
            self.field_labels["test"].setText("<i>available after download</i>")
            versions = ", ".join(v.version for v in entry.versions) if entry else ""
            self.field_labels["where"].setText(
                html.escape(f"bioimage.io zoo, versions: {versions or 'unknown'}")
            )
            if entry is not None and entry.problems:
                self.field_labels["can"].setText(
                    html.escape(f"{compat.reason}") + "<br>" + _html_list(entry.problems[1:3])
                    if len(entry.problems) > 1
                    else html.escape(compat.reason)
                )
            self.details_loaded.emit(item.item_id)
        self._update_buttons()

    def _load_details(self, item: LibraryItem) -> tuple[str, ModelPackage, Any, TestStatus | None]:
        """Runs on a pool thread: load the package and its test status."""
        assert item.description_path is not None
        package = self.services.load_package(item.description_path)
        formats = item.cached.weights_formats if item.cached else None
        compat = self.services.compatibility(package, formats)
        status = self.services.test_status(package.description_path)
        return item.item_id, package, compat, status

    def _on_details_loaded(self, result: tuple[str, ModelPackage, Any, TestStatus | None]) -> None:
        item_id, package, compat, status = result
        if item_id != self._shown_id:
            return  # the user moved on
        self._package = package
        spec = package.spec
        self._details_compatibility = compat
        capability = self.services.capability(compat)
        dims = f"{compat.spatial_dims}D model; " if compat.spatial_dims else ""
        problem = (
            self.services.conversion_unavailable(compat.weights_format)
            if capability.verdict.startswith("needs") and compat.weights_format
            else None
        )
        self.field_labels["can"].setText(
            html.escape(f"{capability.verdict}: {dims}{capability.reason}")
            + (f"<br><i>{html.escape(problem)}</i>" if problem else "")
        )
        self._update_buttons()
        self.description_label.setText(spec.description)
        self.field_labels["authors"].setText(_html_list(spec.authors))
        self.field_labels["license"].setText(html.escape(spec.license or "not stated"))
        cites = []
        for c in spec.cite:
            text = html.escape(c.get("text", ""))
            link = c.get("url") or (f"https://doi.org/{c['doi']}" if c.get("doi") else "")
            cites.append(
                f'{text} <a href="{html.escape(link)}">{html.escape(link)}</a>' if link else text
            )
        self.field_labels["cite"].setText("<br>".join(cites) or "<i>none given</i>")
        self.field_labels["inputs"].setText(
            "<br>".join(
                f"<b>{html.escape(t.id)}</b>: {t.axes_letters} ({html.escape(t.data_type)})"
                for t in spec.inputs
            )
        )
        self.field_labels["outputs"].setText(
            "<br>".join(
                f"<b>{html.escape(t.id)}</b>: {t.axes_letters} ({html.escape(t.data_type)})"
                for t in spec.outputs
            )
        )
        self.field_labels["weights"].setText(_html_list(tuple(spec.weights)))
        self._show_test_status(status)
        self._show_cover(package)
        self._update_buttons()
        self.details_loaded.emit(item_id)

    def _on_details_failed(self, exc: BaseException) -> None:
        self.field_labels["test"].setText("")
        self.cover_label.setText("")
        from zoodesk.gui.errors import readable_message

        self.field_labels["can"].setText(
            f"<span style='color:#c0392b'>{html.escape(readable_message(exc))}</span>"
        )
        log.warning("cannot load model details: %s", readable_message(exc))
        self._update_buttons()
        self.details_loaded.emit(self._shown_id or "")

    def _show_cover(self, package: ModelPackage) -> None:
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

    def _show_test_status(self, status: TestStatus | None) -> None:
        label = self.field_labels["test"]
        if status is None:
            label.setText("not tested yet: <i>Run test</i> checks the model on this computer")
            return
        colour = "#2e8b57" if status.passed else "#c0392b"
        label.setText(
            f"<span style='color:{colour}'><b>{html.escape(status.summary)}</b></span>"
            f" <span>({html.escape(status.tested_at)})</span>"
        )

    def test_status_text(self) -> str:
        """The test status as shown (plain text)."""
        from PySide6.QtGui import QTextDocumentFragment

        return QTextDocumentFragment.fromHtml(self.field_labels["test"].text()).toPlainText()

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
            self.download_button.setToolTip(item.compatibility.reason)
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
        self.convert_button.setToolTip(
            problem or "Convert the weights to ONNX, then run the model's own test"
        )
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
        self.task_label.setText(f"{name}…")
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

    def _on_task_cancel_clicked(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.task_label.setText("Cancelling…")

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
        self.task_label.setText(f"Imported {model.name} as {model.key}.")
        for note in model.notes:
            self.task_label.setText(self.task_label.text() + f"\nNote: {note}")
        self.status_message.emit(f"Imported {model.name}")
        item_id = f"cache:{model.key}"
        self.refresh(select=item_id)
        self.model_installed.emit(item_id)

    def _on_import_failed(self, exc: BaseException) -> None:
        self.task_label.setText("Import failed.")
        report_error(self, "Import failed", exc, self.services.log_file)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        event.acceptProposedAction()
        for path in paths[:1]:  # one task at a time
            if path.suffix.lower() == _BUNDLE_SUFFIX:
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
        self.task_label.setText(f"Installed {names}. {result.catalogue_note}.")
        select = f"cache:{result.models[0].key}" if result.models else None
        self.refresh(select=select)
        if select:
            self.model_installed.emit(select)

    def _on_bundle_failed(self, exc: BaseException) -> None:
        self.task_label.setText("Bundle task failed.")
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
        self.task_label.setText(f"Wrote {result.path} ({size:.1f} MB).")
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
        self.field_labels["test"].setText("<i>running…</i>")
        self._start_task(
            lambda _cancel: (item.item_id, self.services.run_test(package, device)),
            f"Testing {item.name}",
            item.item_id,
            on_result=self._on_test_done,
            on_error=self._on_test_failed,
        )

    def _on_test_done(self, result: tuple[str, TestStatus]) -> None:
        item_id, status = result
        self.task_label.setText(f"Test {'passed' if status.passed else 'FAILED'}.")
        if item_id == self._shown_id:
            self._show_test_status(status)
        self.test_finished.emit(item_id, status.summary)

    def _on_test_failed(self, exc: BaseException) -> None:
        self.task_label.setText("The test could not run.")
        self.field_labels["test"].setText("<span style='color:#c0392b'>could not run</span>")
        report_error(self, "The test could not run", exc, self.services.log_file)
        self.test_finished.emit(self._task_item or "", "could not run")

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
        self.task_label.setText(event.message)
        if event.total:
            scale = 1024 if event.unit == "bytes" else 1
            self.task_progress.setRange(0, max(1, int(event.total // scale)))
            self.task_progress.setValue(int(event.done // scale))
        else:
            self.task_progress.setRange(0, 0)

    def _on_download_done(self, _result: Any) -> None:
        # download_model returns None; its last event carries the installed model.
        self.task_label.setText("Download complete.")
        self.refresh()
        self.model_installed.emit(self._task_item or "")

    def _on_download_failed(self, exc: BaseException) -> None:
        from zoodesk.errors import CancelledError

        if isinstance(exc, CancelledError):
            self.task_label.setText("Download cancelled; it resumes where it stopped next time.")
            return
        self.task_label.setText("Download failed.")
        report_error(self, "Download failed", exc, self.services.log_file)

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
            on_error=self._on_download_failed,
        )

    def _on_catalogue_refreshed(self, _result: Any) -> None:
        self.task_label.setText("Catalogue refreshed.")
        self.refresh()

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
            self.task_label.setText("Conversion cancelled; the model is unchanged.")
            return
        self.task_label.setText("Conversion failed; the model is unchanged.")
        report_error(self, "Conversion failed", exc, self.services.log_file)

    def _on_converted(self, result: Any) -> None:
        # The conversion ran the model's own test on the converted weights.
        test = result.test
        worst = max((o.max_abs_diff for o in test.outputs), default=0.0)
        self.task_label.setText(
            f"Converted to ONNX; the model's test passed on {test.device} "
            f"(max abs diff {worst:.2g})."
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
        self.task_label.setText(f"Removed {model.name}.")
        self._shown_id = None
        self.refresh()

    def _on_use_clicked(self) -> None:
        item = self.current_item()
        if item is not None and item.installed:
            self.use_model_requested.emit(item)
