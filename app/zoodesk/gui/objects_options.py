"""The "Objects" options: how a run, or a re-measure, makes objects from a model's outputs.

The form only gathers the user's choices; the proposal, the settings and their
checks come from the core (:mod:`zoodesk.instances`, through :class:`Services`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from zoodesk.errors import ZooDeskError
from zoodesk.gui.services import Services
from zoodesk.gui.wording import in_gui_words

if TYPE_CHECKING:
    from zoodesk.instances import InstanceSettings
    from zoodesk.models.spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

#: The method list: (choice, text).  "none" makes no objects.
METHOD_ITEMS = (
    ("none", "None (model outputs only)"),
    ("auto", "Automatic (proposed from the model's outputs)"),
    ("threshold", "Threshold"),
    ("watershed", "Threshold, touching objects split (watershed)"),
    ("boundary", "Foreground and boundaries (watershed)"),
    ("labels", "The output already holds labels"),
    ("stardist", "StarDist"),
)
THRESHOLD_ITEMS = (
    ("value", "Value"),
    ("otsu", "Otsu (from the image's histogram)"),
    ("model", "The model's own"),
)
#: The control that each setting of :class:`InstanceSettings` is made with, by its name
#: on the form: problems the core finds with a setting name that control.
CONTROL_NAMES = {
    "method": "Method",
    "source": "Output",
    "channel": "Channel",
    "boundary_channel": "Boundary channel",
    "threshold": "Threshold",
    "boundary_threshold": "Threshold",
    "min_size": "Minimum size",
    "max_size": "Maximum size",
    "min_distance": "Seed distance",
    "block": "Method",
}
_THRESHOLDED = ("threshold", "watershed", "boundary")
_PROBLEM_STYLE = "color: #c0392b;"


class ObjectOptionsWidget(QGroupBox):
    """The "Objects" group: a method (or none, or automatic) and its settings.

    Parameters
    ----------
    services
        The engine: proposes and checks the settings.
    allow_none
        Offer "None" (a run may make no objects; a re-measure always makes some).
    """

    #: Any choice changed (the problem, if any, is already shown).
    changed = Signal()

    def __init__(
        self, services: Services, parent: QWidget | None = None, *, allow_none: bool = True
    ) -> None:
        super().__init__("Objects", parent)
        self.setObjectName("objectOptions")
        self.services = services
        self._spec: ModelSpec | None = None
        self._outputs: list[str] = []
        self._proposal: InstanceSettings | None = None
        self._reason = ""
        self._problem: str | None = None
        self._problem_setting: str | None = None
        self._filling = False
        self._build(allow_none)
        self._refresh()

    # ------------------------------------------------------------------ building

    def _build(self, allow_none: bool) -> None:
        self.method_combo = QComboBox()
        self.method_combo.setObjectName("objectsMethod")
        for choice, text in METHOD_ITEMS:
            if choice == "none" and not allow_none:
                continue
            self.method_combo.addItem(text, choice)
        unavailable = self.services.instance_method_unavailable("stardist")
        if unavailable:
            index = self.method_combo.findData("stardist")
            model = self.method_combo.model()
            if isinstance(model, QStandardItemModel):
                item = model.item(index)
                item.setEnabled(False)
                item.setToolTip(unavailable)
            self.method_combo.setItemText(index, "StarDist (not available here)")
        self.proposal_label = QLabel("")
        self.proposal_label.setObjectName("objectsProposal")
        self.proposal_label.setWordWrap(True)
        self.output_combo = QComboBox()
        self.output_combo.setObjectName("objectsOutput")
        self.output_combo.setToolTip("The model output that objects are made from")
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip("The foreground (or probability) channel of that output")
        self.boundary_combo = QComboBox()
        self.boundary_combo.setToolTip("The channel of that output that marks boundaries")
        self.threshold_combo = QComboBox()
        self.threshold_combo.setObjectName("objectsThresholdMode")
        for mode, text in THRESHOLD_ITEMS:
            self.threshold_combo.addItem(text, mode)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setObjectName("objectsThreshold")
        self.threshold_spin.setRange(-1e9, 1e9)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("Pixels above this value are foreground")
        threshold_row = QHBoxLayout()
        threshold_row.setContentsMargins(0, 0, 0, 0)
        threshold_row.addWidget(self.threshold_combo, 1)
        threshold_row.addWidget(self.threshold_spin)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setObjectName("objectsMinSize")
        self.min_size_spin.setRange(0, 2_000_000_000)
        self.min_size_spin.setSuffix(" px")
        self.min_size_spin.setSpecialValueText("no minimum")
        self.min_size_spin.setToolTip("Objects with fewer pixels are left out")
        self.max_size_spin = QSpinBox()
        self.max_size_spin.setObjectName("objectsMaxSize")
        self.max_size_spin.setRange(0, 2_000_000_000)
        self.max_size_spin.setSuffix(" px")
        self.max_size_spin.setSpecialValueText("no maximum")
        self.max_size_spin.setToolTip("Objects with more pixels are left out")
        self.fill_holes_check = QCheckBox("Fill holes")
        self.fill_holes_check.setObjectName("objectsFillHoles")
        self.fill_holes_check.setToolTip("Holes inside an object become part of it")
        self.min_distance_spin = QSpinBox()
        self.min_distance_spin.setObjectName("objectsSeedDistance")
        self.min_distance_spin.setRange(1, 10_000)
        self.min_distance_spin.setValue(5)
        self.min_distance_spin.setSuffix(" px")
        self.min_distance_spin.setToolTip(
            "Smallest distance between the centres of two touching objects that are split; "
            "raise it when objects are split too often"
        )
        self.problem_label = QLabel("")
        self.problem_label.setObjectName("objectsProblem")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(_PROBLEM_STYLE)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.form = QFormLayout(self)
        self._labels: dict[str, QLabel] = {}
        self._rows: dict[str, QWidget | QHBoxLayout] = {}
        for key, text, field in (
            ("method", "Method:", self.method_combo),
            ("proposal", "", self.proposal_label),
            ("source", "Output:", self.output_combo),
            ("channel", "Channel:", self.channel_combo),
            ("boundary_channel", "Boundary channel:", self.boundary_combo),
            ("threshold", "Threshold:", threshold_row),
            ("min_distance", "Seed distance:", self.min_distance_spin),
            ("min_size", "Minimum size:", self.min_size_spin),
            ("max_size", "Maximum size:", self.max_size_spin),
            ("fill_holes", "", self.fill_holes_check),
            ("problem", "", self.problem_label),
        ):
            label = QLabel(text)
            self._labels[key] = label
            self._rows[key] = field
            self.form.addRow(label, field)

        for combo in (
            self.method_combo,
            self.output_combo,
            self.channel_combo,
            self.boundary_combo,
            self.threshold_combo,
        ):
            # Long item texts must not widen the form beyond a narrow side panel.
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)
            combo.currentIndexChanged.connect(self._on_control_changed)
        for spin in (
            self.threshold_spin,
            self.min_size_spin,
            self.max_size_spin,
            self.min_distance_spin,
        ):
            spin.valueChanged.connect(self._on_control_changed)
        self.fill_holes_check.toggled.connect(self._on_control_changed)

    # ------------------------------------------------------------------- public

    def set_spec(self, spec: ModelSpec | None, outputs: list[str] | None = None) -> None:
        """The model whose outputs objects are made from (None: not known).

        ``outputs`` names the outputs when the model itself is not at hand (a run
        whose model left the cache): then nothing can be proposed.
        """
        self._spec = spec
        self._outputs = [t.id for t in spec.outputs] if spec is not None else list(outputs or [])
        self._proposal, self._reason = None, ""
        if spec is not None:
            try:
                self._proposal, self._reason = self.services.propose_instances(spec)
            except Exception as exc:  # a proposal never stops the form from working
                log.warning("no object method proposed: %s", exc)
                self._reason = in_gui_words(str(exc))
        self._filling = True
        current = self.output_combo.currentData()
        self.output_combo.clear()
        for name in self._outputs:
            self.output_combo.addItem(name, name)
        index = self.output_combo.findData(current)
        self.output_combo.setCurrentIndex(max(index, 0))
        self._fill_channels()
        self._filling = False
        if self.choice() == "auto":
            self._apply(self._proposal)
        self._refresh()

    def set_settings(self, data: dict[str, Any] | None) -> None:
        """Show recorded settings (a run record's ``parameters.instances``)."""
        if not data:
            return
        index = self.method_combo.findData(str(data.get("method")))
        if index < 0:
            return
        self._filling = True
        self.method_combo.setCurrentIndex(index)
        self._filling = False
        try:
            self._apply(self.services.instance_settings(data))
        except ZooDeskError as exc:
            log.warning("recorded object settings not shown: %s", exc)
        self._refresh()

    def set_choice(self, choice: str) -> None:
        """Choose a method (``none``, ``auto`` or one of the methods)."""
        index = self.method_combo.findData(choice)
        if index >= 0:
            self.method_combo.setCurrentIndex(index)

    def choice(self) -> str | None:
        """``auto`` or a method; None when no objects are to be made."""
        choice = self.method_combo.currentData()
        return None if choice in (None, "none") else str(choice)

    def method(self) -> str | None:
        """The method the settings use: the chosen one, or the proposal's."""
        choice = self.choice()
        if choice == "auto":
            return self._proposal.method if self._proposal is not None else None
        return choice

    def overrides(self) -> dict[str, Any]:
        """The values set on the form that apply to the method."""
        method = self.method()
        values: dict[str, Any] = {
            "source": self.output_combo.currentData(),
            "channel": self.channel_combo.currentData(),
            "min_size": self.min_size_spin.value(),
            "max_size": self.max_size_spin.value() or None,
            "fill_holes": self.fill_holes_check.isChecked(),
        }
        if method in _THRESHOLDED:
            mode = self.threshold_combo.currentData()
            values["threshold"] = self.threshold_spin.value() if mode == "value" else mode
        if method == "watershed":
            values["min_distance"] = self.min_distance_spin.value()
        if method == "boundary":
            values["boundary_channel"] = self.boundary_combo.currentData()
        return {k: v for k, v in values.items() if v is not None}

    def resolved(self) -> InstanceSettings | None:
        """The settings for the run; None for no objects.

        Raises :class:`ZooDeskError` (with ``setting`` naming the field at fault, when
        one is) when they do not fit the model or this installation.
        """
        choice = self.choice()
        if choice is None:
            return None
        overrides = self.overrides()
        if self._spec is not None:
            settings = self.services.resolve_instances(self._spec, choice, overrides)
        elif choice == "auto":
            raise _settings_error("no model to propose a method from: choose one", "method")
        else:
            settings = self.services.instance_settings({"method": choice, **overrides})
        unavailable = self.services.instance_method_unavailable(settings.method)
        if unavailable:
            raise _settings_error(unavailable, "method")
        return settings

    def problem(self) -> str | None:
        """What is wrong with the choices, in the form's words; None when nothing is."""
        return self._problem

    def summary(self) -> str:
        """A few words for a tab or a button: the method in use, or "off"."""
        choice = self.choice()
        if choice is None:
            return "off"
        method = self.method()
        if choice == "auto":
            return f"auto: {method}" if method else "auto"
        return str(method)

    # ------------------------------------------------------------------ updating

    def _on_control_changed(self, *_args: Any) -> None:
        if self._filling:
            return
        sender = self.sender()
        if sender is self.method_combo and self.choice() == "auto":
            self._apply(self._proposal)
        elif sender is self.output_combo:
            self._filling = True
            self._fill_channels()
            self._filling = False
        self._refresh()

    def _apply(self, settings: InstanceSettings | None) -> None:
        """Show these settings' values on the form."""
        if settings is None:
            return
        self._filling = True
        try:
            index = self.output_combo.findData(settings.source)
            if index >= 0:
                self.output_combo.setCurrentIndex(index)
            self._fill_channels()
            self._select(self.channel_combo, settings.channel)
            if settings.boundary_channel is not None:
                self._select(self.boundary_combo, settings.boundary_channel)
            if isinstance(settings.threshold, str):
                self._select(self.threshold_combo, settings.threshold)
            else:
                self._select(self.threshold_combo, "value")
                self.threshold_spin.setValue(float(settings.threshold))
            self.min_size_spin.setValue(int(settings.min_size))
            self.max_size_spin.setValue(int(settings.max_size or 0))
            self.fill_holes_check.setChecked(bool(settings.fill_holes))
            self.min_distance_spin.setValue(int(settings.min_distance))
        finally:
            self._filling = False

    @staticmethod
    def _select(combo: QComboBox, data: Any) -> None:
        index = combo.findData(data)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _tensor(self) -> TensorSpec | None:
        source = self.output_combo.currentData()
        if self._spec is None or source is None:
            return None
        return next((t for t in self._spec.outputs if t.id == source), None)

    def _fill_channels(self) -> None:
        tensor = self._tensor()
        count = (tensor.channel_count or 1) if tensor is not None else 1
        names: list[str] = []
        if tensor is not None:
            axis = next((a for a in tensor.axes if a.kind == "channel"), None)
            names = [str(n) for n in axis.channel_names] if axis is not None else []
        for combo in (self.channel_combo, self.boundary_combo):
            current = combo.currentData()
            combo.clear()
            for i in range(count):
                name = names[i] if i < len(names) else ""
                combo.addItem(f"{i}: {name}" if name else str(i), i)
            index = combo.findData(current)
            combo.setCurrentIndex(index if index >= 0 else 0)
        if count > 1 and self.boundary_combo.currentIndex() == 0:
            # Two channels: foreground and boundary are rarely the same one.
            self.boundary_combo.setCurrentIndex(1)

    def _refresh(self) -> None:
        choice, method = self.choice(), self.method()
        on = choice is not None
        many_outputs = len(self._outputs) > 1
        many_channels = self.channel_combo.count() > 1
        visible = {
            "proposal": choice == "auto",
            "source": on and many_outputs,
            "channel": on and many_channels and method != "stardist",
            "boundary_channel": on and method == "boundary",
            "threshold": on and method in _THRESHOLDED,
            "min_distance": on and method == "watershed",
            "min_size": on and method != "stardist",
            "max_size": on and method != "stardist",
            "fill_holes": on and method != "stardist",
        }
        for key, shown in visible.items():
            self.form.setRowVisible(self._labels[key], shown)
        self.threshold_spin.setEnabled(self.threshold_combo.currentData() == "value")
        if choice == "auto":
            if self._proposal is not None:
                self.proposal_label.setText(
                    f"Proposed: <b>{self._proposal.describe()}</b><br>Why: {self._reason}."
                )
            elif self._spec is None:
                self.proposal_label.setText("Choose a model to see what is proposed.")
            else:
                self.proposal_label.setText(f"Nothing to propose: {self._reason}.")
        self._check()
        self.changed.emit()

    def _check(self) -> None:
        for label in self._labels.values():
            label.setStyleSheet("")
        problem, setting = None, None
        if self.choice() is not None and (self._spec is not None or self._outputs):
            try:
                self.resolved()
            except ZooDeskError as exc:
                setting = getattr(exc, "setting", None)
                name = CONTROL_NAMES.get(setting or "", "Objects")
                problem = f"{name}: {in_gui_words(str(exc))}"
        elif self.choice() is not None:
            problem = None  # no model yet: nothing to check against
        self._problem, self._problem_setting = problem, setting
        self.problem_label.setText(problem or "")
        self.form.setRowVisible(self._labels["problem"], problem is not None)
        if setting is not None:
            key = "threshold" if setting == "boundary_threshold" else setting
            if key in self._labels:
                self._labels[key].setStyleSheet(_PROBLEM_STYLE)


def _settings_error(message: str, setting: str) -> ZooDeskError:
    from zoodesk.instances import InstanceSettingsError

    return InstanceSettingsError(message, setting=setting)
