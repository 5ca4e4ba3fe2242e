"""User settings and the locations of ZooDesk's data.

``ZOODESK_HOME`` (default: the platform's user data folder) holds ``settings.json``,
the model cache, the catalogue snapshot and the logs.  Every setting can be
overridden with an environment variable ``ZOODESK_<NAME>`` (e.g. ``ZOODESK_DEVICE``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from zoodesk.errors import ZooDeskError
from zoodesk.paths import APP_NAME, LOGS_FOLDER, zoodesk_home

__all__ = ["APP_NAME", "Settings", "load_settings", "save_settings", "zoodesk_home"]

DEFAULT_INDEX_URL = "https://bioimage-io.github.io/collection/index.json"

Device = Literal["auto", "cpu", "gpu"]


class Settings(BaseModel):
    """Persistent user settings; see the module docstring for overrides."""

    network_enabled: bool = Field(True, description="Off means nothing ever connects.")
    index_url: str = DEFAULT_INDEX_URL
    proxy: str | None = None
    ca_bundle: str | None = None
    allow_http: bool = False
    transfer_base_seconds: float = Field(
        60.0, gt=0, description="Time every request may take before its size counts."
    )
    transfer_min_bytes_per_second: float = Field(
        20_000,
        gt=0,
        description="Slowest accepted transfer: a request may take transfer_base_seconds "
        "plus one second per this many bytes of its size.",
    )
    device: Device = "auto"
    threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 lets ZooDesk choose.")
    cache_dir: str | None = Field(None, description="Model cache; default ZOODESK_HOME/models.")
    cluster: str = Field(
        "",
        description="Where runs go: empty for this process, local:N for N worker processes "
        "here, or a Dask scheduler's address (tcp://host:8786).",
    )

    @property
    def home(self) -> Path:
        return zoodesk_home()

    @property
    def models_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.home / "models"

    @property
    def catalogue_dir(self) -> Path:
        return self.home / "catalogue"

    @property
    def logs_dir(self) -> Path:
        return self.home / LOGS_FOLDER

    @property
    def settings_file(self) -> Path:
        return self.home / "settings.json"


def _env_overrides() -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = os.environ.get(f"ZOODESK_{name.upper()}")
        if value is not None:
            overrides[name] = value
    return overrides


def load_settings() -> Settings:
    """Read ``settings.json`` from ZOODESK_HOME, then apply environment overrides."""
    path = zoodesk_home() / "settings.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ZooDeskError(f"{path}: settings file is not valid JSON ({exc})") from exc
    data.update(_env_overrides())
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ZooDeskError(f"{path}: setting {where!r}: {first['msg']}") from exc


def save_settings(settings: Settings) -> Path:
    """Write the settings atomically to ``settings.json`` in ZOODESK_HOME."""
    path = settings.settings_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(settings.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
