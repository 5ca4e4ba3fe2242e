"""Validated descriptions are remembered by their sha256 and give the same model.

A run with a model seen before does not import bioimageio.spec; a changed
description is validated again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NUCLEI, REPO, SNAPSHOT
from zoodesk.fileutils import sha256_file
from zoodesk.models.description import read_model_description
from zoodesk.models.package import load_model_package
from zoodesk.models.remembered import FOLDER_NAME, spec_from_data, spec_to_data


def test_every_valid_zoo_description_comes_back_equal(tmp_path: Path) -> None:
    """The fast form holds everything the engine reads: for each description of the
    zoo's snapshot that validates, the spec read back equals the validated one."""
    checked = 0
    for path in sorted((SNAPSHOT / "rdfs").glob("*.json")):
        try:
            read = read_model_description(json.loads(path.read_text("utf-8")), str(path))
        except Exception:  # descriptions the zoo lists but bioimageio.spec refuses
            continue
        data = json.loads(json.dumps(spec_to_data(read.spec)))
        assert spec_from_data(data) == read.spec, path.name
        checked += 1
    assert checked >= 80  # 91 of the 137 validate with this bioimageio.spec


def _copy_nuclei(tmp_path: Path) -> Path:
    target = tmp_path / "nuclei"
    shutil.copytree(NUCLEI, target)
    return target


def _bioimageio_spec_imported(package: Path, home: Path) -> bool:
    code = (
        "import sys\n"
        "from zoodesk.models.package import load_model_package\n"
        f"load_model_package({str(package)!r})\n"
        "print('bioimageio.spec' in sys.modules)\n"
    )
    env = {**os.environ, "ZOODESK_HOME": str(home), "PYTHONPATH": str(REPO / "app")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_a_description_seen_before_loads_without_bioimageio_spec(
    tmp_path: Path, isolated_home: Path
) -> None:
    package = _copy_nuclei(tmp_path)
    assert _bioimageio_spec_imported(package, isolated_home)  # first time: validated
    remembered = list((isolated_home / FOLDER_NAME).glob("*.json"))
    assert [p.stem for p in remembered] == [sha256_file(package / "bioimageio.yaml")]
    assert not _bioimageio_spec_imported(package, isolated_home)


def test_the_remembered_model_predicts_the_same(tmp_path: Path) -> None:
    from zoodesk.inference.predict import Predictor

    package_dir = _copy_nuclei(tmp_path)
    first = load_model_package(package_dir)
    assert first._descr is not None  # validated now
    second = load_model_package(package_dir)
    assert second._descr is None  # read back from the remembered form
    assert second.spec == first.spec
    image = np.load(NUCLEI / "test_input.npy")
    outputs = [
        Predictor(p, device="cpu").predict({"raw": image}).outputs["probability"]
        for p in (first, second)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    # Tasks that need the full description still get it, validated on first use.
    assert second.descr.name == first.descr.name


def test_a_changed_description_is_validated_again(tmp_path: Path, isolated_home: Path) -> None:
    package_dir = _copy_nuclei(tmp_path)
    load_model_package(package_dir)
    description = package_dir / "bioimageio.yaml"
    text = description.read_text("utf-8")
    assert "name: UNet 2D Nuclei Broad" in text
    description.write_text(text.replace("name: UNet 2D Nuclei Broad", "name: Renamed"), "utf-8")
    changed = load_model_package(package_dir)
    assert changed._descr is not None
    assert changed.spec.name == "Renamed"
    assert len(list((isolated_home / FOLDER_NAME).glob("*.json"))) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: "not json",
        lambda d: json.dumps({**d, "versions": {**d["versions"], "zoodesk": "0.0.0"}}),
        lambda d: json.dumps({**d, "spec": {"name": 3}}),
    ],
    ids=["unreadable", "other-version", "damaged-spec"],
)
def test_a_damaged_or_foreign_remembered_file_is_replaced(
    tmp_path: Path, isolated_home: Path, damage: object
) -> None:
    package_dir = _copy_nuclei(tmp_path)
    good = load_model_package(package_dir)
    (remembered,) = (isolated_home / FOLDER_NAME).glob("*.json")
    data = json.loads(remembered.read_text("utf-8"))
    remembered.write_text(damage(data), "utf-8")  # type: ignore[operator]
    again = load_model_package(package_dir)
    assert again._descr is not None  # validated again
    assert again.spec == good.spec
    assert json.loads(remembered.read_text("utf-8")) == data
