"""The main window: library, batch and results pages, menus, status bar, safe closing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from zoodesk import __version__
from zoodesk.gui._style import app_icon, icon
from zoodesk.gui._worker import TaskRunner
from zoodesk.gui.batch import BatchWidget
from zoodesk.gui.errors import report_error
from zoodesk.gui.library import LibraryWidget
from zoodesk.gui.results import ResultsWidget
from zoodesk.gui.services import Services

if TYPE_CHECKING:
    from zoodesk.batch.record import RunRecord
    from zoodesk.models.library import LibraryItem

log = logging.getLogger(__name__)

PAGE_LIBRARY, PAGE_BATCH, PAGE_RESULTS = range(3)


class MainWindow(QMainWindow):
    """ZooDesk's window.

    Parameters
    ----------
    services
        The engine, passed on to every page.
    """

    #: Emitted once the window has been shown and the library load has started.
    shown = Signal()

    def __init__(self, services: Services, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.services = services
        self.runner = TaskRunner(self)
        self._closing_after_cancel = False
        self._started = False
        self.setWindowTitle("ZooDesk")
        self.setWindowIcon(app_icon())
        self.resize(1280, 680)
        self.setMinimumSize(QSize(900, 600))

        self.library_page = LibraryWidget(services, self.runner)
        self.batch_page = BatchWidget(services, self.runner)
        self.results_page = ResultsWidget(services, self.runner)

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setIconSize(QSize(28, 28))
        self.nav.setFixedWidth(160)
        self.nav.setSpacing(2)
        self.nav.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.nav.setFrameShape(QListWidget.Shape.NoFrame)
        self.pages = QStackedWidget()
        for widget, name, icon_name in (
            (self.library_page, "Models", "library"),
            (self.batch_page, "Batch run", "batch"),
            (self.results_page, "Results", "results"),
        ):
            item = QListWidgetItem(icon(icon_name), name)
            item.setSizeHint(QSize(140, 48))
            self.nav.addItem(item)
            self.pages.addWidget(widget)
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.nav.setCurrentRow(PAGE_LIBRARY)
        self.nav.setStyleSheet(
            "QListWidget#navigation { background: palette(window); font-size: 11pt; }"
            "QListWidget#navigation::item { padding: 6px; border-radius: 6px; }"
            "QListWidget#navigation::item:selected { background: rgba(43, 138, 158, 60);"
            " color: palette(text); font-weight: bold; }"
        )
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self.nav)
        layout.addWidget(self.pages, 1)
        self.setCentralWidget(central)

        self.busy_label = QLabel("")
        self.statusBar().addPermanentWidget(self.busy_label)
        if services.log_file is not None:
            log_label = QLabel(f"Log: {services.log_file}")
            log_label.setStyleSheet("color: palette(placeholder-text);")
            log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.statusBar().addPermanentWidget(log_label)

        self._build_menus()
        self._connect_pages()

    # ----------------------------------------------------------------- building

    def _build_menus(self) -> None:
        lib, batch, results = self.library_page, self.batch_page, self.results_page
        self.action_settings = QAction(icon("settings"), "&Settings…", self)
        self.action_settings.setShortcut(QKeySequence("Ctrl+,"))
        self.action_settings.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.action_settings.triggered.connect(self._on_settings_triggered)
        self.action_quit = QAction("&Quit", self)
        self.action_quit.setShortcut(QKeySequence.StandardKey.Quit)
        self.action_quit.setMenuRole(QAction.MenuRole.QuitRole)
        self.action_quit.triggered.connect(self.close)
        file_menu = self.menuBar().addMenu("&File")
        for action in (
            lib.action_import_folder,
            lib.action_import_zip,
            lib.action_import_bundle,
            lib.action_export_bundle,
        ):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(results.action_open)
        file_menu.addAction(results.action_export)
        file_menu.addSeparator()
        file_menu.addAction(self.action_settings)
        file_menu.addSeparator()
        file_menu.addAction(self.action_quit)

        models_menu = self.menuBar().addMenu("&Models")
        models_menu.addAction(lib.action_refresh_catalogue)
        models_menu.addAction(lib.action_test)

        run_menu = self.menuBar().addMenu("&Run")
        for action in (batch.action_add_folder, batch.action_samples, batch.action_preview):
            run_menu.addAction(action)
        run_menu.addSeparator()
        for action in (batch.action_start, batch.action_cancel, batch.action_resume):
            run_menu.addAction(action)

        view_menu = self.menuBar().addMenu("&View")
        for row, (name, shortcut) in enumerate(
            (("&Models", "Ctrl+1"), ("&Batch run", "Ctrl+2"), ("&Results", "Ctrl+3"))
        ):
            action = QAction(name, self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(lambda _checked=False, r=row: self.show_page(r))
            view_menu.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(results.action_previous)
        view_menu.addAction(results.action_next)

        help_menu = self.menuBar().addMenu("&Help")
        self.action_user_guide = QAction("&User guide", self)
        self.action_user_guide.setShortcut(QKeySequence.StandardKey.HelpContents)
        self.action_user_guide.triggered.connect(self._on_user_guide_triggered)
        help_menu.addAction(self.action_user_guide)
        self.action_shortcuts = QAction("&Keyboard shortcuts", self)
        self.action_shortcuts.setShortcut(QKeySequence("Ctrl+/"))
        self.action_shortcuts.triggered.connect(self._on_shortcuts_triggered)
        help_menu.addAction(self.action_shortcuts)
        help_menu.addSeparator()
        logs = QAction("Open the &log folder", self)
        logs.triggered.connect(self._on_open_logs_triggered)
        help_menu.addAction(logs)
        about = QAction("&About ZooDesk", self)
        about.setMenuRole(QAction.MenuRole.AboutRole)
        about.triggered.connect(self._on_about_triggered)
        help_menu.addAction(about)

        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.setIconSize(QSize(20, 20))
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (
            lib.action_import_folder,
            batch.action_add_folder,
            batch.action_start,
            batch.action_cancel,
            results.action_open,
            self.action_settings,
        ):
            toolbar.addAction(action)

    def _connect_pages(self) -> None:
        self.library_page.library_changed.connect(self.batch_page.set_library)
        self.library_page.use_model_requested.connect(self._on_use_model_requested)
        self.library_page.status_message.connect(self._on_status_message)
        self.batch_page.status_message.connect(self._on_status_message)
        self.batch_page.lasting_message.connect(self.statusBar().showMessage)
        self.batch_page.run_finished.connect(self._on_run_finished)
        self.batch_page.running_changed.connect(self._on_running_changed)
        self.batch_page.open_results_requested.connect(self._on_open_results_requested)
        self.results_page.export_requested.connect(self._on_export_requested)
        self.runner.busy_changed.connect(self._on_busy_changed)

    # ----------------------------------------------------------------- pages

    def show_page(self, page: int) -> None:
        """Switch to the library, batch or results page."""
        self.nav.setCurrentRow(page)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._started:
            self._started = True
            # The library is read after the window is up, so that it opens at once.
            QTimer.singleShot(0, self._on_first_show)

    def _on_first_show(self) -> None:
        self.library_page.refresh()
        self.shown.emit()

    def _on_use_model_requested(self, item: LibraryItem) -> None:
        self.batch_page.choose_model(item)
        self.show_page(PAGE_BATCH)

    def _on_run_finished(self, record: RunRecord | None) -> None:
        if record is not None:
            self.results_page.show_record(record)

    def _on_running_changed(self, running: bool) -> None:
        if not running and self._closing_after_cancel:
            # Closing was asked for during the run: now that it has stopped, close.
            QTimer.singleShot(0, self.close)

    def _on_open_results_requested(self, path: Path) -> None:
        self.results_page.open_record(path)
        self.show_page(PAGE_RESULTS)

    def _on_export_requested(self, record_path: Path) -> None:
        from zoodesk.gui.export_dialog import ExportDialog

        dialog = ExportDialog(self.services, self.runner, record_path, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def _on_status_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    def _on_busy_changed(self, count: int) -> None:
        self.busy_label.setText("Working…" if count else "")

    # ---------------------------------------------------------------- dialogs

    def _on_settings_triggered(self) -> None:
        from zoodesk.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.services.settings, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._on_settings_accepted(dialog))
        dialog.open()

    def _on_settings_accepted(self, dialog: Any) -> None:
        try:
            path = self.services.update_settings(dialog.settings())
        except Exception as exc:
            report_error(self, "The settings could not be saved", exc, self.services.log_file)
            return
        self.statusBar().showMessage(f"Settings saved to {path}", 8000)
        self.library_page.refresh()
        self.batch_page.fill_cluster_choices()

    def _on_open_logs_triggered(self) -> None:
        folder = self.services.settings.logs_dir
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _on_user_guide_triggered(self) -> None:
        from zoodesk.gui.help_dialogs import UserGuideDialog, user_guide_path

        dialog = UserGuideDialog(user_guide_path(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def shortcut_sections(self) -> list[tuple[str, list[QAction]]]:
        """Every keyboard shortcut of the window: the menus', then the results viewer's."""
        sections = []
        for menu_action in self.menuBar().actions():
            menu = menu_action.menu()
            if menu is not None:
                title = menu_action.text().replace("&", "")
                sections.append((title, [a for a in menu.actions() if not a.isSeparator()]))
        viewer = self.results_page.viewer
        sections.append(("Results viewer", viewer.viewer_actions()))
        return sections

    def _on_shortcuts_triggered(self) -> None:
        from zoodesk.gui.help_dialogs import ShortcutsDialog

        dialog = ShortcutsDialog(self.shortcut_sections(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def _on_about_triggered(self) -> None:
        QMessageBox.about(
            self,
            "About ZooDesk",
            f"<b>ZooDesk {__version__}</b><br>Run BioImage Model Zoo models offline on "
            "folders of microscopy images, and export the results for deposition.<br><br>"
            f"Data folder: {self.services.settings.home}",
        )

    # ---------------------------------------------------------------- closing

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.batch_page.running:
            if not self._closing_after_cancel:
                answer = QMessageBox.question(
                    self,
                    "A run is in progress",
                    "A batch run is still in progress. Cancel it and quit?\n\n"
                    "Files already finished are kept; Resume continues the rest later.",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.No,
                )
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
                self._closing_after_cancel = True
                self.batch_page.cancel_run()
                self.statusBar().showMessage("Cancelling the run, then closing…")
            # The run stops after its current block; the window closes when it has.
            event.ignore()
            return
        self.runner.cancel_all()
        # Short tasks (a preview block, a scan) end within moments of being cancelled.
        if not self.runner.wait(15000):
            log.warning("some tasks were still running at exit")
        event.accept()
