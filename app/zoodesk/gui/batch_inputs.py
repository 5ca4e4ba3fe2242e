"""The batch page's first box: the model, the inputs and how their files are read."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QWidget,
)

from zoodesk.gui._style import icon


class InputsBoxWidget(QGroupBox):
    """The model list, the input folders and files with their buttons, the file
    patterns, scenes, sub-folders, image axes and channel.

    The buttons are wired by the page; this box keeps the lists and reads the fields.
    """

    #: The patterns, scenes, sub-folders, axes or channel changed.
    filters_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("1. Images and model", parent)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(28)

        self.inputs_list = QListWidget()
        self.inputs_list.setObjectName("inputsList")
        self.inputs_list.setMaximumHeight(58)
        self.inputs_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.inputs_list.setToolTip("Folders and files to process; drop them here")
        self.add_folder_button = QPushButton(icon("folder"), "Add folder…")
        self.add_files_button = QPushButton("Add files…")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected inputs")
        self.samples_button = QPushButton(icon("samples"), "Try the sample images")
        self.samples_button.setObjectName("samplesButton")
        # The buttons beside the list, two by two, keep the box low on small screens.
        inputs_row = QHBoxLayout()
        inputs_row.addWidget(self.inputs_list, 1)
        buttons = QGridLayout()
        buttons.addWidget(self.add_folder_button, 0, 0)
        buttons.addWidget(self.add_files_button, 0, 1)
        buttons.addWidget(self.remove_button, 1, 0)
        buttons.addWidget(self.samples_button, 1, 1)
        inputs_row.addLayout(buttons)

        self.patterns_edit = QLineEdit()
        self.patterns_edit.setPlaceholderText("all images (e.g. *.tif; *_dapi.png)")
        self.patterns_edit.editingFinished.connect(self.filters_changed)
        self.recursive_check = QCheckBox("Include sub-folders")
        self.recursive_check.toggled.connect(self.filters_changed)
        self.axes_edit = QLineEdit()
        self.axes_edit.setPlaceholderText("from the files (e.g. CYX, TZYX)")
        self.axes_edit.setMaximumWidth(220)
        self.axes_edit.editingFinished.connect(self.filters_changed)
        self.scenes_edit = QLineEdit()
        self.scenes_edit.setObjectName("scenesEdit")
        self.scenes_edit.setPlaceholderText("all")
        self.scenes_edit.setMaximumWidth(160)
        self.scenes_edit.setToolTip(
            "Scenes (CZI), positions (ND2) or images (LIF) to process, by name or number; "
            "wildcards allowed, several separated by ';' (e.g. P*; 2)"
        )
        self.scenes_edit.editingFinished.connect(self.filters_changed)
        self.channel_spin = QSpinBox()
        self.channel_spin.setRange(-1, 64)
        self.channel_spin.setSpecialValueText("as the model needs")
        self.channel_spin.setValue(-1)
        self.channel_spin.setToolTip("The image channel fed to a one-channel model (0 = first)")
        self.channel_spin.valueChanged.connect(self.filters_changed)

        form = QFormLayout(self)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.addRow("Model:", self.model_combo)
        form.addRow("Inputs:", inputs_row)
        patterns_row = QHBoxLayout()
        patterns_row.addWidget(self.patterns_edit, 1)
        patterns_row.addWidget(QLabel("Scenes:"))
        patterns_row.addWidget(self.scenes_edit, 1)
        patterns_row.addWidget(self.recursive_check)
        form.addRow("Only files matching:", patterns_row)
        mapping_row = QHBoxLayout()
        mapping_row.addWidget(QLabel("Image axes:"))
        mapping_row.addWidget(self.axes_edit, 1)
        mapping_row.addWidget(QLabel("Channel:"))
        mapping_row.addWidget(self.channel_spin)
        mapping_row.addStretch(1)
        form.addRow("Axis mapping:", mapping_row)

    def inputs(self) -> list[Path]:
        """The folders and files chosen as inputs."""
        return [Path(self.inputs_list.item(i).text()) for i in range(self.inputs_list.count())]

    def add(self, paths: list[Path]) -> None:
        """Add folders or files not listed yet."""
        known = {str(p) for p in self.inputs()}
        for path in paths:
            if str(path) not in known:
                self.inputs_list.addItem(str(path))
                known.add(str(path))

    def remove_selected(self) -> None:
        """Remove the selected inputs."""
        for item in self.inputs_list.selectedItems():
            self.inputs_list.takeItem(self.inputs_list.row(item))

    def patterns(self) -> list[str]:
        """The file name patterns (``;`` or ``,`` between them)."""
        return _split(self.patterns_edit.text())

    def scenes(self) -> list[str]:
        """The scenes to read of multi-scene files."""
        return _split(self.scenes_edit.text())

    def axes(self) -> str | None:
        """The image axes given by the user; None: from the files."""
        return self.axes_edit.text().strip().upper() or None

    def channels(self) -> list[int] | None:
        """The channel fed to a one-channel model; None: as the model needs."""
        value = self.channel_spin.value()
        return None if value < 0 else [value]

    def controls(self) -> list[QWidget]:
        """Everything here that sets up a run (disabled while one runs)."""
        return [
            self.model_combo,
            self.inputs_list,
            self.add_folder_button,
            self.add_files_button,
            self.remove_button,
            self.samples_button,
            self.patterns_edit,
            self.scenes_edit,
            self.recursive_check,
            self.axes_edit,
            self.channel_spin,
        ]


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.replace(",", ";").split(";") if p.strip()]
