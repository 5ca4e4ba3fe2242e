"""User settings and the locations of ZooDesk's data.

``ZOODESK_HOME`` (default: the platform's user data folder) holds ``settings.json``,
the model cache, the catalogue snapshot and the logs.  Every setting can be
overridden with an environment variable ``ZOODESK_<NAME>`` (e.g. ``ZOODESK_DEVICE``).

The settings are a plain dataclass checked by hand rather than a pydantic model:
every command reads them at start-up, and importing pydantic alone costs more than
a one-image prediction's whole overhead.  Values from ``settings.json`` and from the
environment are converted as a user would expect (``"false"``, ``"0"`` and ``"off"``
are false; ``"4"`` is the number 4); anything else is refused with the setting's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from zoodesk.errors import ZooDeskError
from zoodesk.paths import APP_NAME, LOGS_FOLDER, zoodesk_home

__all__ = ["APP_NAME", "Settings", "load_settings", "save_settings", "zoodesk_home"]

DEFAULT_INDEX_URL = "https://bioimage-io.github.io/collection/index.json"

Device = Literal["auto", "cpu", "gpu"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class SettingError(ValueError):
    """One setting's value was refused; ``name`` is the setting."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingError(name, f"expected true or false, got {value!r}")


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise SettingError(name, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise SettingError(name, f"expected a number, got {value!r}") from None
    else:
        raise SettingError(name, f"expected a number, got {value!r}")
    if not math.isfinite(number):
        raise SettingError(name, f"expected a finite number, got {value!r}")
    return number


def _as_int(name: str, value: Any) -> int:
    number = _as_number(name, value)
    if not number.is_integer():
        raise SettingError(name, f"expected a whole number, got {value!r}")
    return int(number)


def _as_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingError(name, f"expected text, got {value!r}")
    return value


def _as_optional_text(name: str, value: Any) -> str | None:
    return None if value is None else _as_text(name, value)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Persistent user settings; see the module docstring for overrides.

    Every value is checked (and converted from text) on construction, so
    ``Settings(threads="4")`` is ``Settings(threads=4)`` and ``Settings(threads=-1)``
    raises :class:`SettingError`.  :meth:`with_changes` makes a checked copy.
    """

    #: Off means nothing ever connects.
    network_enabled: bool = True
    index_url: str = DEFAULT_INDEX_URL
    proxy: str | None = None
    ca_bundle: str | None = None
    allow_http: bool = False
    #: Time every request may take before its size counts (seconds, > 0).
    transfer_base_seconds: float = 60.0
    #: Slowest accepted transfer: a request may take transfer_base_seconds plus one
    #: second per this many bytes of its size (> 0).
    transfer_min_bytes_per_second: float = 20_000.0
    device: Device = "auto"
    #: ONNX Runtime threads; 0 lets ZooDesk choose.
    threads: int = 0
    #: Model cache; default ZOODESK_HOME/models.
    cache_dir: str | None = None
    #: Where runs go: empty for this process, local:N for N worker processes here, or
    #: a Dask scheduler's address (tcp://host:8786).
    cluster: str = ""

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {
            "network_enabled": _as_bool("network_enabled", self.network_enabled),
            "index_url": _as_text("index_url", self.index_url),
            "proxy": _as_optional_text("proxy", self.proxy),
            "ca_bundle": _as_optional_text("ca_bundle", self.ca_bundle),
            "allow_http": _as_bool("allow_http", self.allow_http),
            "transfer_base_seconds": _as_number(
                "transfer_base_seconds", self.transfer_base_seconds
            ),
            "transfer_min_bytes_per_second": _as_number(
                "transfer_min_bytes_per_second", self.transfer_min_bytes_per_second
            ),
            "device": _as_text("device", self.device).strip().lower(),
            "threads": _as_int("threads", self.threads),
            "cache_dir": _as_optional_text("cache_dir", self.cache_dir),
            "cluster": _as_text("cluster", self.cluster).strip(),
        }
        for name in ("transfer_base_seconds", "transfer_min_bytes_per_second"):
            if checked[name] <= 0:
                raise SettingError(name, f"must be greater than 0, got {checked[name]:g}")
        if checked["threads"] < 0:
            raise SettingError("threads", f"must be 0 or more, got {checked['threads']}")
        if checked["device"] not in DEVICES:
            raise SettingError(
                "device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, as in ``settings.json``."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        """Settings from ``settings.json``'s object; unknown names are ignored, so a
        file written by a newer version still loads."""
        known = set(cls.names())
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_changes(self, **changes: Any) -> Settings:
        """A checked copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as ``settings.json`` holds them."""
        return dataclasses.asdict(self)

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
    for name in Settings.names():
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
        if not isinstance(data, dict):
            raise ZooDeskError(f"{path}: settings file must hold an object of settings")
    overrides = _env_overrides()
    data.update(overrides)
    try:
        return Settings.from_mapping(data)
    except SettingError as exc:
        where = f"ZOODESK_{exc.name.upper()}" if exc.name in overrides else str(path)
        raise ZooDeskError(f"{where}: setting {exc.name!r}: {exc}") from exc


def save_settings(settings: Settings) -> Path:
    """Write the settings atomically to ``settings.json`` in ZOODESK_HOME."""
    path = settings.settings_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(settings.as_dict(), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
