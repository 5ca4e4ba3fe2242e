"""The model library's list: search, filters, the models, and the catalogue's date.

The library page (:mod:`zoodesk.gui.library`) gives it the library to show and
its actions (import, refresh); the list keeps the selection where it can.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from zoodesk.gui._style import icon
from zoodesk.gui.services import Services
from zoodesk.gui.wording import in_gui_words, local_time, rich_tooltip

if TYPE_CHECKING:
    from zoodesk.models.library import Library, LibraryItem

_SHOW_FILTERS = (("All models", "all"), ("Installed", "installed"), ("Zoo catalogue", "catalogue"))


def catalogue_line(library: Library) -> str:
    """The saved catalogue's date in local time and its age, or what to do without one."""
    catalogue = library.catalogue
    if catalogue is None:
        return "No zoo catalogue saved yet: refresh it when online, or import a bundle."
    from zoodesk.models.catalogue import format_age

    age = format_age(catalogue.age)
    age = "fetched just now" if age == "just now" else f"{age} old"
    return f"Zoo catalogue of {local_time(catalogue.fetched_at)} ({age})"


class ModelListWidget(QWidget):
    """Search field, filters and the list of models.

    Parameters
    ----------
    services
        The engine (what this installation makes of each model).
    import_actions
        Import a folder (the button's own action), a zip, a bundle.
    refresh_action
        Refresh the zoo catalogue.
    """

    #: The search or a filter changed.
    filters_changed = Signal()
    #: The selected row changed.
    current_changed = Signal()
    #: A row was double-clicked.
    item_activated = Signal()

    def __init__(
        self,
        services: Services,
        import_actions: tuple[QAction, QAction, QAction],
        refresh_action: QAction,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.services = services
        self.library: Library | None = None
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("librarySearch")
        self.search_edit.setPlaceholderText("Search name, tags, authors…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self.filters_changed)
        self.show_combo = QComboBox()
        for label, value in _SHOW_FILTERS:
            self.show_combo.addItem(label, value)
        self.show_combo.currentIndexChanged.connect(self.filters_changed)
        self.dims_combo = QComboBox()
        for label, dims in (("2D and 3D", None), ("2D", 2), ("3D", 3)):
            self.dims_combo.addItem(label, dims)
        self.dims_combo.currentIndexChanged.connect(self.filters_changed)
        self.runnable_check = QCheckBox("Runnable only")
        self.runnable_check.setToolTip("Only models ZooDesk can run, possibly after conversion")
        self.runnable_check.toggled.connect(self.filters_changed)

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
        self.tree.currentItemChanged.connect(self.current_changed)
        self.tree.itemDoubleClicked.connect(self.item_activated)

        self.catalogue_label = QLabel("Loading the library…")
        self.catalogue_label.setObjectName("catalogueNote")
        self.catalogue_label.setWordWrap(True)
        self.catalogue_label.setStyleSheet("color: palette(placeholder-text);")
        self.catalogue_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.count_label = QLabel("")

        refresh_button = QToolButton()
        refresh_button.setDefaultAction(refresh_action)
        refresh_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        folder, zip_file, bundle = import_actions
        import_button = QToolButton()
        import_button.setDefaultAction(folder)
        import_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        import_button.setText("Import…")
        import_button.setToolTip(
            "Import a model folder, a model zip or an offline bundle (or drop one here)"
        )
        import_button.addAction(zip_file)
        import_button.addAction(bundle)
        import_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)

        filters = QHBoxLayout()
        filters.addWidget(self.show_combo)
        filters.addWidget(self.dims_combo)
        filters.addWidget(self.runnable_check)
        filters.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(self.search_edit, 1)
        top.addWidget(import_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.catalogue_label, 1)
        bottom.addWidget(refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(filters)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.count_label)
        layout.addLayout(bottom)

    def set_library(self, library: Library) -> None:
        """Show this library's catalogue line (the list is filled by :meth:`fill`)."""
        self.library = library
        self.catalogue_label.setText(catalogue_line(library))
        catalogue = library.catalogue
        self.catalogue_label.setToolTip(
            rich_tooltip(f"From {catalogue.index_url}") if catalogue is not None else ""
        )

    def show_failure(self) -> None:
        """The library could not be read."""
        self.catalogue_label.setText("The library could not be read.")

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

    def fill(self, wanted: str | None) -> None:
        """Show the items matching the filters and select ``wanted`` (else the first),
        without signalling the change."""
        self.tree.blockSignals(True)
        self.tree.clear()
        current: QTreeWidgetItem | None = None
        items = self.visible_items()
        for item in items:
            capability = self.services.capability(item.compatibility)
            row = QTreeWidgetItem([item.name, item.origin_label, capability.label])
            row.setData(0, Qt.ItemDataRole.UserRole, item.item_id)
            row.setToolTip(0, rich_tooltip(item.description or item.name))
            row.setToolTip(2, rich_tooltip(in_gui_words(capability.reason)))
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
