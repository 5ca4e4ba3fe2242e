"""The output folder of a batch run: it follows the inputs unless chosen by hand, and
a folder that holds another run is never written into without asking."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from zoodesk.batch.earlier import EarlierRun
from zoodesk.gui._style import icon
from zoodesk.gui.wording import local_time

#: The run signature's keys, named as the batch page's controls name them.
_SETUP_NAMES = {
    "description_sha256": "model",
    "weights_format": "weights format",
    "weights_sha256": "model weights",
    "axes": "Image axes",
    "channels": "Channel",
    "series": "series",
    "tile": "tile size",
    "pad_mode": "padding",
    "instances": "Objects settings",
}
#: How many of the inputs left out are named in the question.
_NAMED = 3


class OutputFolderWidget(QWidget):
    """A folder field with **Browse…**.

    Until the user types or browses a folder, :meth:`follow_inputs` sets the folder
    that goes with the inputs; a folder chosen by hand stays until the field is
    emptied (which makes it follow the inputs again).
    """

    #: The folder in the field changed (by hand or by following the inputs).
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._by_hand = False
        self._following = False
        self.edit = QLineEdit()
        self.edit.setObjectName("outputEdit")
        self.edit.setPlaceholderText("where results go (follows the inputs)")
        self.edit.setMinimumWidth(160)
        self.edit.textChanged.connect(self._on_text_changed)
        self.browse_button = QPushButton(icon("folder"), "Browse…")
        self.browse_button.setObjectName("browseOutputButton")
        self.browse_button.clicked.connect(self._on_browse_clicked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.browse_button)

    @property
    def chosen_by_hand(self) -> bool:
        """True when the user typed or browsed the folder."""
        return self._by_hand

    def folder(self) -> Path | None:
        """The folder in the field; None when it is empty."""
        text = self.edit.text().strip()
        return Path(text) if text else None

    def follow_inputs(self, folder: Path | None) -> None:
        """Show the folder that goes with the inputs, unless one was chosen by hand."""
        if self._by_hand:
            return
        self._set(folder)

    def set_folder(self, folder: Path, *, by_hand: bool) -> None:
        """Put a folder in the field, as chosen by hand or as following the inputs."""
        self._set(folder)
        self._by_hand = by_hand

    def _set(self, folder: Path | None) -> None:
        self._following = True
        try:
            self.edit.setText(str(folder) if folder is not None else "")
        finally:
            self._following = False

    def _on_text_changed(self, text: str) -> None:
        if not self._following:
            # Anything but following the inputs is the user's choice; an empty field
            # hands the choice back to the inputs.
            self._by_hand = bool(text.strip())
        self.changed.emit()

    def forget_choice(self) -> None:
        """Let the folder follow the inputs again."""
        self._by_hand = False

    def browse(self) -> None:
        """Ask for a folder; one chosen is the user's choice."""
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.edit.text())
        if folder:
            self.set_folder(Path(folder), by_hand=True)

    def _on_browse_clicked(self) -> None:
        self.browse()


class EarlierRunDialog(QMessageBox):
    """Asks what to do when the output folder holds another run.

    Once the box is closed, :meth:`choice` is ``"new"`` (run into a fresh sibling
    folder), ``"add"`` (add this run's inputs to that run; offered only when both have
    one set-up) or ``"cancel"``.

    Parameters
    ----------
    earlier
        The run in the folder.
    new_folder
        The fresh folder that **New folder** runs into.
    """

    def __init__(
        self, earlier: EarlierRun, new_folder: Path, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("earlierRunDialog")
        self.setIcon(QMessageBox.Icon.Question)
        self.setWindowTitle("The output folder holds another run")
        folder = earlier.record_path.parent
        started = local_time(earlier.started)
        self.setText(
            f"<b>{folder}</b> already holds the results of a run of <b>{earlier.model}</b>"
            f"{f' started {started}' if started else ''}: {earlier.done} image(s) done."
        )
        self.setInformativeText(_explanation(earlier, new_folder))
        self.new_button = self.addButton("New folder", QMessageBox.ButtonRole.AcceptRole)
        self.new_button.setToolTip(f"Run into {new_folder}")
        self.add_button = self.addButton("Add to that run", QMessageBox.ButtonRole.ApplyRole)
        self.add_button.setToolTip(
            "Process this run's images into that folder; its record keeps the images done earlier"
        )
        self.add_button.setVisible(earlier.can_add)
        self.cancel_button = self.addButton(QMessageBox.StandardButton.Cancel)
        self.setDefaultButton(self.new_button)
        self.setEscapeButton(self.cancel_button)

    def choice(self) -> str:
        """What the user chose: ``"new"``, ``"add"`` or ``"cancel"``."""
        clicked = self.clickedButton()
        if clicked is self.new_button:
            return "new"
        if clicked is self.add_button:
            return "add"
        return "cancel"


def _explanation(earlier: EarlierRun, new_folder: Path) -> str:
    lines = []
    if earlier.left_out:
        names = ", ".join(Path(p).name for p in earlier.left_out[:_NAMED])
        extra = len(earlier.left_out) - _NAMED
        more = f" and {extra} more" if extra > 0 else ""
        lines.append(
            f"{len(earlier.left_out)} of them are not among this run's inputs ({names}{more}): "
            "a run there would replace that run's record and leave their results out of it."
        )
    if earlier.differences:
        what = ", ".join(dict.fromkeys(_SETUP_NAMES.get(k, k) for k in earlier.differences))
        hint = (
            ""
            if earlier.left_out
            else " To redo all its images with this set-up there, tick “Redo files already done”."
        )
        lines.append(
            f"That run was made with a different {what}, so this run cannot be added to it: "
            f"the results of two set-ups never share a folder.{hint}"
        )
    choices = f"New folder runs into {new_folder.name}, beside it."
    if earlier.can_add:
        choices += (
            " Add to that run processes this run's images into that folder and keeps the "
            "earlier ones in its record."
        )
    lines.append(choices)
    return "\n\n".join(lines)
