"""Settings: read from settings.json and ZOODESK_* variables, checked, written back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoodesk.errors import ZooDeskError
from zoodesk.settings import SettingError, Settings, load_settings, save_settings


def test_defaults_without_a_settings_file(isolated_home: Path) -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.device == "auto" and settings.threads == 0 and settings.network_enabled
    assert settings.models_dir == isolated_home / "models"


def test_values_from_the_environment_are_converted(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOODESK_THREADS", "4")
    monkeypatch.setenv("ZOODESK_NETWORK_ENABLED", "off")
    monkeypatch.setenv("ZOODESK_DEVICE", "CPU")
    monkeypatch.setenv("ZOODESK_TRANSFER_BASE_SECONDS", "2.5")
    settings = load_settings()
    assert settings.threads == 4
    assert settings.network_enabled is False
    assert settings.device == "cpu"
    assert settings.transfer_base_seconds == 2.5


def test_the_environment_overrides_the_file(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated_home / "settings.json").write_text(json.dumps({"threads": 2, "proxy": "http://p"}))
    monkeypatch.setenv("ZOODESK_THREADS", "3")
    settings = load_settings()
    assert settings.threads == 3 and settings.proxy == "http://p"


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        ({"threads": -1}, "threads", "0 or more"),
        ({"threads": 1.5}, "threads", "whole number"),
        ({"device": "tpu"}, "device", "auto, cpu, gpu"),
        ({"network_enabled": "maybe"}, "network_enabled", "true or false"),
        ({"transfer_base_seconds": 0}, "transfer_base_seconds", "greater than 0"),
        ({"transfer_min_bytes_per_second": "fast"}, "transfer_min_bytes_per_second", "number"),
        ({"proxy": 8080}, "proxy", "text"),
        ({"cache_dir": ["a"]}, "cache_dir", "text"),
    ],
)
def test_a_bad_value_in_the_file_names_the_file_and_the_setting(
    isolated_home: Path, data: dict[str, object], name: str, words: str
) -> None:
    path = isolated_home / "settings.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ZooDeskError) as caught:
        load_settings()
    message = str(caught.value)
    assert str(path) in message and repr(name) in message and words in message


def test_a_bad_environment_value_names_the_variable(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOODESK_THREADS", "many")
    with pytest.raises(ZooDeskError, match="ZOODESK_THREADS: setting 'threads'"):
        load_settings()


def test_a_file_that_is_not_an_object_is_refused(isolated_home: Path) -> None:
    (isolated_home / "settings.json").write_text("[1, 2]")
    with pytest.raises(ZooDeskError, match="object of settings"):
        load_settings()


def test_unknown_names_are_ignored(isolated_home: Path) -> None:
    (isolated_home / "settings.json").write_text(json.dumps({"threads": 1, "from_later": True}))
    assert load_settings().threads == 1


def test_save_and_load_round_trip(isolated_home: Path) -> None:
    changed = Settings().with_changes(
        threads=3, proxy="http://proxy:3128", cluster=" local:2 ", network_enabled=False
    )
    assert changed.cluster == "local:2"
    path = save_settings(changed)
    assert json.loads(path.read_text())["threads"] == 3
    assert not path.with_name("settings.json.tmp").exists()
    assert load_settings() == changed


def test_with_changes_checks_the_new_values() -> None:
    with pytest.raises(SettingError) as caught:
        Settings().with_changes(threads=-2)
    assert caught.value.name == "threads"


def test_reading_the_settings_does_not_import_pydantic(isolated_home: Path) -> None:
    code = (
        "import sys; from zoodesk.settings import load_settings; load_settings(); "
        "print('pydantic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
