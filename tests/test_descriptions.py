"""Descriptions are read as the zoo's own tools read them (real packages in ../shared).

bioimageio.core validates a description in its own format version; what it accepts
must load here.  Metadata that only the conversion to format 0.5 refuses is repaired
or left out, with a warning; problems that matter keep their whole reason, one line
each, naming the field; messages name the user's own paths.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

from tests import yaml_writer
from tests.conftest import SHARED
from zoodesk.cli import main
from zoodesk.errors import ModelPackageError
from zoodesk.models.cache import ModelCache
from zoodesk.models.description import InvalidDescriptionError, read_description_data
from zoodesk.models.package import load_model_package

ZOO = SHARED / "zoo-models"


def _core_accepts(description: Path) -> bool:
    """bioimageio.core's default check of the description itself: its own format."""
    from bioimageio.spec import InvalidDescr, load_description

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_description(description, perform_io_checks=False, format_version="discover")
    return not isinstance(descr, InvalidDescr)


@pytest.mark.parametrize(
    "package",
    [
        "stardist_example_model",
        "tiktorch_dummy_tensorflow",
        "unet2d_fixed_shape",
        "unet2d_keras_tf",
        "unet2d_keras_tf2",
        "upsample_test_model",
        "unet2d_diff_output_shape",
        "unet2d_multi_tensor",
    ],
)
def test_what_the_reference_accepts_loads(package: str) -> None:
    folder = ZOO / package
    loaded = load_model_package(folder)
    assert _core_accepts(loaded.description_path)
    assert loaded.spec.inputs and loaded.spec.outputs


def test_a_doi_given_as_a_citation_url_is_read_as_the_doi() -> None:
    loaded = load_model_package(ZOO / "stardist_example_model")
    dois = [c.get("doi") for c in loaded.spec.cite]
    assert dois == ["10.1007/978-3-030-00934-2_30", "10.1109/WACV45572.2020.9093435"]
    assert any("cite.0.url" in w and "DOI" in w for w in loaded.warnings)


def test_a_citation_with_a_meaningless_url_is_left_out_with_a_warning() -> None:
    loaded = load_model_package(ZOO / "tiktorch_dummy_tensorflow")
    assert loaded.spec.cite == ()
    (warning,) = [w for w in loaded.warnings if w.startswith("cite.0")]
    assert "left out" in warning and "URL" in warning


def test_a_fixed_output_with_a_halo_reads_as_the_input_shape() -> None:
    loaded = load_model_package(ZOO / "unet2d_fixed_shape")
    (output,) = loaded.spec.outputs
    assert [a.halo for a in output.axes if a.kind == "space"] == [8, 8]
    assert all(a.reference is not None for a in output.axes if a.kind == "space")
    assert any("outputs.0.shape" in w for w in loaded.warnings)


def test_a_format_0_3_description_gets_one_line_saying_so(capsys: pytest.CaptureFixture) -> None:
    folder = ZOO / "tiktorch_unet2d_onnx_v0_3"
    with pytest.raises(ModelPackageError) as info:
        load_model_package(folder)
    message = str(info.value)
    assert "\n" not in message
    assert "UNet2DNucleiBroad.model.yaml" in message and "0.3.0" in message
    assert "cannot be read" in message
    assert main(["models", "import", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "0.3.0" in err and "Traceback" not in err


def _broken_copy(tmp_path: Path) -> Path:
    """The nuclei package with a step of 0 and an ONNX opset that does not exist."""
    folder = tmp_path / "broken"
    shutil.copytree(ZOO / "unet2d_nuclei_broad", folder)
    description = folder / "bioimageio.yaml"
    data = read_description_data(description)
    data["inputs"][0]["axes"][2]["size"] = {"min": 64, "step": 0}
    data["weights"]["onnx"]["opset_version"] = 3
    yaml_writer.dump(data, description)
    return folder


def test_every_problem_is_kept_one_line_each_naming_the_field(tmp_path: Path) -> None:
    folder = _broken_copy(tmp_path)
    with pytest.raises(InvalidDescriptionError) as info:
        load_model_package(folder)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems) >= 2
    assert lines[0].startswith(f"{folder / 'bioimageio.yaml'}: not a valid model description: ")
    assert any("inputs.0.axes.2" in ln and "step" in ln for ln in lines)
    assert any("weights.onnx.opset_version" in ln for ln in lines)


def test_a_failed_import_names_the_users_path_not_the_staging_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = _broken_copy(tmp_path)
    archive = tmp_path / "broken-model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in folder.iterdir():
            z.write(path, path.name)
    for source in (folder, archive):
        with pytest.raises(ModelPackageError) as info:
            ModelCache.from_settings().import_package(source)
        message = str(info.value)
        assert str(source) in message
        assert ".staging" not in message
        assert main(["models", "import", str(source)]) == 1
        assert ".staging" not in capsys.readouterr().err


def test_json_failures_print_one_document(capsys: pytest.CaptureFixture) -> None:
    code = main(["models", "import", str(ZOO / "tiktorch_unet2d_onnx_v0_3"), "--json"])
    out = capsys.readouterr().out
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False
    assert "0.3.0" in document["error"]
    assert document["command"] == "models import"


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "show", "no-such-model", "--json"],
        ["models", "test", "/no/such/folder", "--json"],
        ["predict", "--model", "/no/such/model", "--input", "x", "--output", "y", "--json"],
        ["export", "/no/such/run", "--to", "z", "--json"],
        ["models", "show", "--json"],  # a usage error
    ],
)
def test_every_failing_json_command_prints_exactly_one_document(
    argv: list[str], capsys: pytest.CaptureFixture
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    assert code != 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["error"]


ALIAS_BOMB = "format_version: 0.5.4\ntype: model\nname: bomb\nconfig:\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else 'x'] * 9)}]\n" for i in range(10)
)


def test_an_alias_bomb_is_refused_quickly_under_a_memory_cap(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "bioimageio.yaml").write_text(ALIAS_BOMB)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))\n"
        "from zoodesk.cli import main\n"
        "sys.exit(main(['models', 'import', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ZOODESK_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 1
    assert "aliases are expanded" in done.stderr and str(folder / "bioimageio.yaml") in done.stderr
    assert "Traceback" not in done.stderr


def test_ordinary_anchors_and_aliases_still_load() -> None:
    # unet2d_fixed_shape shares its axes and shape between input and output by alias.
    assert "&axes" in (ZOO / "unet2d_fixed_shape" / "v0_4.bioimageio.yaml").read_text()
    assert load_model_package(ZOO / "unet2d_fixed_shape").spec.outputs


@pytest.mark.parametrize("opening", ["[", '{"a": '])
def test_a_description_nested_absurdly_deep_gets_one_line(opening: str, tmp_path: Path) -> None:
    folder = tmp_path / "deep"
    folder.mkdir()
    closing = "]" if opening == "[" else "}"
    text = '{"format_version": "0.5.4", "type": "model", "config": ' + opening * 100_000
    (folder / "bioimageio.yaml").write_text(text + "1" + closing * 100_000 + "}")
    with pytest.raises(ModelPackageError) as info:
        load_model_package(folder)
    assert "\n" not in str(info.value) and "refused" in str(info.value)


@pytest.mark.parametrize("field", ["covers", "inputs", "outputs"])
def test_a_list_field_holding_a_number_is_named_not_a_crash(
    field: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = _broken_copy(tmp_path)
    description = folder / "bioimageio.yaml"
    data = read_description_data(description)
    data[field] = -1
    yaml_writer.dump(data, description)
    assert main(["models", "import", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "unexpected error" not in err
    assert f"{description}: not a valid model description" in err
    assert field in err
