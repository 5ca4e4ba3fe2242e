"""Write YAML for test fixtures with the YAML library bioimageio.spec already uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dump(data: Any, path: Path) -> None:
    from ruyaml import YAML

    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
