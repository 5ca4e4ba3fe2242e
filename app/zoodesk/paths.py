"""Where ZooDesk keeps its data (cheap to import: no settings model is loaded)."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "ZooDesk"
#: The logs' folder under :func:`zoodesk_home`.
LOGS_FOLDER = "logs"


def zoodesk_home() -> Path:
    """The folder that holds settings, cache and logs (``ZOODESK_HOME`` overrides)."""
    env = os.environ.get("ZOODESK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
