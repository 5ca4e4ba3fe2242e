"""The settings dialog: model cache folder, network, proxy, CA bundle, device, threads."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from zoodesk.errors import ZooDeskError
from zoodesk.gui.wording import in_gui_words
from zoodesk.settings import Settings

#: The command line's option for a setting, by the name of the setting's control here.
_CONTROLS = {"--cluster": "Run batches on"}

_DEVICES = (
    ("Automatic (GPU when available)", "auto"),
    ("CPU", "cpu"),
    ("GPU", "gpu"),
)


class SettingsDialog(QDialog):
    """Edit a copy of the settings; :meth:`settings` returns the edited copy.

    Parameters
    ----------
    settings
        The current settings (not modified).
    parent
        The main window.
    """

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("ZooDesk settings")
        self.setMinimumWidth(560)
        self._original = settings

        self.cache_edit = QLineEdit(settings.cache_dir or "")
        self.cache_edit.setPlaceholderText(str(settings.home / "models"))
        browse_cache = QPushButton("Browse…")
        browse_cache.clicked.connect(self._on_browse_cache_clicked)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_edit, 1)
        cache_row.addWidget(browse_cache)

        self.network_check = QCheckBox("Allow network access (catalogue refresh, downloads)")
        self.network_check.setChecked(settings.network_enabled)
        self.network_check.setToolTip("Off: ZooDesk never connects to anything")
        self.network_check.toggled.connect(self._on_network_toggled)
        self.proxy_edit = QLineEdit(settings.proxy or "")
        self.proxy_edit.setPlaceholderText("none (e.g. http://proxy.example.org:3128)")
        self.ca_edit = QLineEdit(settings.ca_bundle or "")
        self.ca_edit.setPlaceholderText("the system's certificates")
        browse_ca = QPushButton("Browse…")
        browse_ca.clicked.connect(self._on_browse_ca_clicked)
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_edit, 1)
        ca_row.addWidget(browse_ca)

        self.device_combo = QComboBox()
        for label, value in _DEVICES:
            self.device_combo.addItem(label, value)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(settings.device)))
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("automatic")
        self.threads_spin.setValue(settings.threads)
        self.cluster_edit = QLineEdit(settings.cluster)
        self.cluster_edit.setObjectName("clusterEdit")
        self.cluster_edit.setPlaceholderText("this computer (or local:4, tcp://scheduler:8786)")
        self.cluster_edit.setToolTip(
            "Where batch runs go by default: empty for this computer, local:N for N worker "
            "processes here, or the address of a Dask scheduler"
        )

        home = QLabel(str(settings.home))
        home.setWordWrap(True)
        home.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("Data folder:", home)
        form.addRow("Model cache:", cache_row)
        form.addRow("", self.network_check)
        form.addRow("Proxy:", self.proxy_edit)
        form.addRow("CA bundle:", ca_row)
        form.addRow("Default device:", self.device_combo)
        form.addRow("Threads:", self.threads_spin)
        form.addRow("Run batches on:", self.cluster_edit)
        note = QLabel(
            "The data folder is set with the ZOODESK_HOME environment variable. "
            "Settings given as ZOODESK_* environment variables override these."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(placeholder-text);")
        self.problem_label = QLabel("")
        self.problem_label.setObjectName("settingsProblem")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #c0392b;")
        self.problem_label.setVisible(False)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.problem_label)
        layout.addWidget(buttons)
        self._on_network_toggled(settings.network_enabled)

    def accept(self) -> None:
        """Close with Save only when every value can be used; else say which is wrong,
        in the dialog's own words, and stay open."""
        try:
            self.settings()
        except ZooDeskError as exc:
            self.problem_label.setText(in_gui_words(str(exc), _CONTROLS))
            self.problem_label.setVisible(True)
            return
        self.problem_label.setVisible(False)
        super().accept()

    def _on_network_toggled(self, enabled: bool) -> None:
        self.proxy_edit.setEnabled(enabled)
        self.ca_edit.setEnabled(enabled)

    def _on_browse_cache_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Model cache folder", self.cache_edit.text()
        )
        if folder:
            self.cache_edit.setText(folder)

    def _on_browse_ca_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "CA bundle", "", "Certificates (*.pem *.crt *.cer);;All files (*)"
        )
        if path:
            self.ca_edit.setText(path)

    def _cluster(self) -> str:
        """The cluster as typed, checked (raises ZooDeskError with the accepted forms)."""
        from zoodesk.cluster.address import cluster_choice

        chosen = cluster_choice(self.cluster_edit.text().strip())
        return str(chosen) if chosen is not None else ""

    def settings(self) -> Settings:
        """The settings as edited (checked by the settings)."""
        cache = self.cache_edit.text().strip()
        return self._original.with_changes(
            cache_dir=str(Path(cache).expanduser()) if cache else None,
            network_enabled=self.network_check.isChecked(),
            proxy=self.proxy_edit.text().strip() or None,
            ca_bundle=self.ca_edit.text().strip() or None,
            device=self.device_combo.currentData(),
            threads=self.threads_spin.value(),
            cluster=self._cluster(),
        )
