"""Messages in the desktop application speak its language: controls, not options;
plain field names, not data paths; the engine's own text behind "Details"."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6 import QtGui
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox

from tests.gui.helpers import import_nuclei
from zoodesk.gui.errors import NO_CONNECTION, ErrorDialog, readable_message
from zoodesk.gui.main_window import MainWindow
from zoodesk.gui.wording import in_gui_words, local_time, problem_cell, rich_tooltip


def _closed_port_url() -> str:
    """An http address on this computer where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/collection/index.json"


def _error_dialog(qtbot: Any, parent: Any) -> ErrorDialog:
    qtbot.waitUntil(lambda: bool(parent.findChildren(ErrorDialog)), timeout=60000)
    return parent.findChildren(ErrorDialog)[-1]


# ------------------------------------------------------------ options and commands


def test_a_channel_problem_names_the_channel_control(nuclei_dir: Path) -> None:
    from zoodesk.batch.preview import required_input
    from zoodesk.errors import AxesMismatchError
    from zoodesk.images.axes import map_image_to_tensor
    from zoodesk.models.package import load_model_package

    tensor = required_input(load_model_package(nuclei_dir).spec)
    with pytest.raises(AxesMismatchError) as caught:
        map_image_to_tensor("CYX", (3, 64, 64), tensor)
    assert "--channel" in str(caught.value)  # the command line's own words stay
    shown = readable_message(caught.value)
    assert "--" not in shown
    assert shown.endswith("choose one in Channel")


@pytest.mark.parametrize(
    ("engine", "gui"),
    [
        (
            "a.czi: no scene matches --scene P9 (scenes: P1, P2)",
            "a.czi: no scene matches “P9” in Scenes (scenes: P1, P2)",
        ),
        (
            "/out: holds results of an earlier run (UNet) with a different --axes, --channel; "
            "choose another output folder, or use --overwrite to redo every input with the "
            "new set-up",
            "/out: holds results of an earlier run (UNet) with a different “Image axes”, "
            "“Channel”; choose another output folder, or tick “Redo files already done” to "
            "redo every input with the new set-up",
        ),
        (
            "/exp: already exists and is not empty (use --overwrite to replace an earlier export)",
            "/exp: already exists and is not empty (tick “Replace an earlier export there” "
            "to replace an earlier export)",
        ),
        (
            "/c: no saved catalogue; fetch one with 'zoodesk catalogue refresh' or import a "
            "bundle with 'zoodesk bundle import FILE'",
            "/c: no saved catalogue; fetch one with Refresh zoo catalogue (F5) or import a "
            "bundle with Import… ▸ Import offline bundle",
        ),
    ],
)
def test_engine_advice_names_controls_instead_of_options(engine: str, gui: str) -> None:
    assert in_gui_words(engine) == gui


def test_the_settings_dialog_words_a_wrong_cluster_with_its_own_control(
    window: MainWindow, qtbot: Any
) -> None:
    from zoodesk.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.services.settings, window)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.cluster_edit.setText("my laptop")
    dialog.accept()
    # The dialog stays open and says which control is wrong, in its own words.
    assert dialog.isVisible() and dialog.result() != dialog.DialogCode.Accepted
    text = dialog.problem_label.text()
    assert dialog.problem_label.isVisible()
    assert text.startswith("“Run batches on” my laptop: not a cluster")
    assert "--" not in text
    dialog.cluster_edit.setText("local:2")
    with qtbot.waitSignal(dialog.accepted, timeout=5000):
        dialog.accept()


# ------------------------------------------------------------ validation problems


def test_an_invalid_orcid_in_the_export_form_is_named_in_plain_words(
    window: MainWindow, qtbot: Any, tmp_path: Path
) -> None:
    from zoodesk.gui.export_dialog import ExportDialog

    dialog = ExportDialog(window.services, window.runner, tmp_path / "run" / "zoodesk-run.json")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.title_edit.setText("Nuclei of HeLa cells")
    dialog.authors_edit.setPlainText("Ada Lovelace | 0000-0002\nGrace Hopper")
    assert not dialog.details_button.isVisible()
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    shown = dialog.status_label.text()
    assert shown.startswith("Author 1: ORCID: '0000-0002' is not an ORCID iD")
    for jargon in ("field '", "authors.0", "Value error", "study form"):
        assert jargon not in shown
    assert not (tmp_path / "run-deposition").exists()
    # The engine's own text is one click away.
    assert dialog.details_button.isVisible()
    qtbot.mouseClick(dialog.details_button, Qt.MouseButton.LeftButton)
    box = dialog.findChild(QMessageBox, "exportProblemBox")
    assert box is not None
    assert "field 'authors.0.orcid': Value error" in box.detailedText()
    box.close()
    # A corrected form clears the problem and its details.
    dialog.authors_edit.setPlainText("Ada Lovelace | 0000-0002-1825-0097")
    dialog.start_export()
    assert not dialog.details_button.isVisible()
    qtbot.waitUntil(lambda: dialog.export_button.isEnabled(), timeout=30000)


def test_an_invalid_model_description_is_explained_in_plain_words(
    window: MainWindow, qtbot: Any, tmp_path: Path, nuclei_dir: Path
) -> None:
    model = tmp_path / "broken-model"
    shutil.copytree(nuclei_dir, model, ignore=shutil.ignore_patterns("v0_4*"))
    description = model / "bioimageio.yaml"
    text = description.read_text(encoding="utf-8")
    text = text.replace("orcid: 0000-0001-6562-7187", "orcid: 1234-bad", 1)
    text = text.replace("name: Fynn Beuttenmueller", "name: 12", 1)
    description.write_text(text, encoding="utf-8")

    library = window.library_page
    library.import_model(model)
    dialog = _error_dialog(qtbot, library)
    shown = dialog.informativeText()
    assert f"{description}: not a valid model description: Author 1: ORCID: " in shown
    assert "Author 2: Name: should be text" in shown
    assert "authors.0" not in shown and "Value error" not in shown
    assert "authors.0.orcid: Value error" in dialog.detailedText()


# ------------------------------------------------------------ network


def test_a_failed_catalogue_refresh_says_there_is_no_connection(
    window: MainWindow, qtbot: Any
) -> None:
    url = _closed_port_url()
    services = window.services
    services.settings = services.settings.with_changes(index_url=url)
    library = window.library_page
    library.action_refresh_catalogue.trigger()
    dialog = _error_dialog(qtbot, library)
    assert dialog.message.startswith(NO_CONNECTION)
    assert library.task_label.text().startswith("No connection to the zoo (offline?)")
    # The address and the system's reason are behind "Show Details…".
    assert f"GET {url}: cannot connect" in dialog.detailedText()
    assert url not in dialog.informativeText()
    qtbot.waitUntil(lambda: not library.busy, timeout=30000)


def test_a_failed_download_stays_with_its_model(
    saved_catalogue: Path, services: Any, qtbot: Any
) -> None:
    from zoodesk.gui.app import create_main_window

    services.settings = services.settings.with_changes(index_url=_closed_port_url())
    window = create_main_window(services)
    qtbot.addWidget(window, before_close_func=lambda w: w.runner.wait(60000))
    library = window.library_page
    with qtbot.waitSignal(library.library_changed, timeout=30000):
        window.show()
    catalogue = library.library.catalogue
    assert library.catalogue_label.text().startswith(
        f"Zoo catalogue of {local_time(catalogue.fetched_at)} ("
    )
    said: list[str] = []
    library.status_message.connect(said.append)
    zoo_id = "zoo:bioimage-io/nice-peacock"
    assert library.select_item(zoo_id)
    name = library.current_item().name

    # Failing under its own model: the line names it, and goes with another selection.
    qtbot.mouseClick(library.download_button, Qt.MouseButton.LeftButton)
    _error_dialog(qtbot, library).close()
    qtbot.waitUntil(lambda: not library.busy, timeout=30000)
    assert library.task_label.text() == f"Download of {name} failed: {NO_CONNECTION}"
    library.select_item("builtin:demo")
    assert library.task_label.text() == ""

    # Failing while another model is shown: never written under that one.
    library.select_item(zoo_id)
    qtbot.mouseClick(library.download_button, Qt.MouseButton.LeftButton)
    library.select_item("builtin:demo")
    assert library.task_label.text().startswith(f"Downloading {name}")
    qtbot.waitUntil(lambda: len(library.findChildren(ErrorDialog)) == 2, timeout=60000)
    qtbot.waitUntil(lambda: not library.busy, timeout=30000)
    assert "failed" not in library.task_label.text()
    assert f"Download of {name} failed: {NO_CONNECTION}" in said


# ------------------------------------------------------------ cells and tooltips


def test_problem_cells_show_the_problem_first_and_long_tooltips_wrap(qtbot: Any) -> None:
    path = Path("/data/plate 3/very/deep/folder/well_B02.ome.tif")
    message = (
        f"{path}: image axes CYX (3, 512, 512), model input 'raw' axes bcyx: the model "
        "takes no channel axis but the image has 3 channels; choose one with --channel"
    )
    text, tip = problem_cell(message, path)
    assert text.startswith("image axes CYX")
    assert text.endswith(f"choose one in Channel — {path}")
    assert QtGui.Qt.mightBeRichText(tip)
    # Shown as Qt shows a tooltip (a word-wrapped label), it is far narrower than one line.
    wrapped = QLabel(tip)
    wrapped.setWordWrap(True)
    qtbot.addWidget(wrapped)
    one_line = QLabel(message)
    qtbot.addWidget(one_line)
    assert wrapped.sizeHint().width() < one_line.sizeHint().width() / 2
    assert rich_tooltip("Short and plain") == "Short and plain"


# ------------------------------------------------------------ the model's details


def test_model_details_list_the_authors_and_show_local_times(
    window: MainWindow,
    qtbot: Any,
    nuclei_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zoodesk.inference.checks import TestStatus

    import_nuclei(qtbot, window, nuclei_dir, monkeypatch)
    library = window.library_page
    authors = library.field_labels["authors"].text()
    first, second = authors.split("<br>")
    assert first.startswith("Constantin Pape;@bioimage-io — EMBL Heidelberg · ORCID ")
    assert 'href="https://orcid.org/0000-0001-6562-7187"' in first
    assert second.startswith("Fynn Beuttenmueller — EMBL Heidelberg")

    # A test recorded at 03:04 UTC reads 12:04 on a computer in Tokyo.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        status = TestStatus(
            passed=True,
            device="cpu",
            weights_format="onnx",
            tested_at="2024-01-02T03:04:05+00:00",
            summary="passed on cpu (onnx): max abs diff 1e-06",
            description_sha256="0" * 64,
        )
        library.details.show_test_status(status)
        assert library.test_status_text().endswith("(2024-01-02 12:04)")
        assert local_time("2024-01-02T03:04:05") == "2024-01-02 12:04"
    finally:
        monkeypatch.undo()
        time.tzset()
