"""Where a run goes: ``local:N`` or a Dask scheduler's address (no Dask imported here)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from zoodesk.errors import ZooDeskError

#: Schemes of the Dask communication protocols a scheduler address may use.
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_ADDRESS = re.compile(
    r"^(?P<scheme>[a-z]+)://(?P<host>\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+)(:(?P<port>\d+))?/?$"
)


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed ``--cluster`` value.

    ``workers`` is set for ``local:N`` (N worker processes started on this computer,
    on loopback, for the run's duration); ``address`` for an existing scheduler.
    """

    workers: int | None = None
    address: str | None = None

    @property
    def is_local(self) -> bool:
        return self.workers is not None

    def __str__(self) -> str:
        return f"local:{self.workers}" if self.workers is not None else str(self.address)


def parse_cluster(value: str) -> ClusterAddress:
    """Parse ``local``, ``local:N`` or ``SCHEME://HOST[:PORT]`` (default port 8786).

    ``local`` alone starts one worker process per CPU core.  Raises
    :class:`ZooDeskError` with the accepted forms for anything else.
    """
    text = value.strip()
    if text.lower() == "local":
        return ClusterAddress(workers=max(1, os.cpu_count() or 1))
    if text.lower().startswith("local:"):
        count = text[6:].strip()
        if not count.isdigit() or not 1 <= int(count) <= 1024:
            raise ZooDeskError(
                f"--cluster {value}: the number of local workers must be 1 to 1024 (e.g. local:4)"
            )
        return ClusterAddress(workers=int(count))
    match = _ADDRESS.match(text)
    if match is None or match["scheme"] not in SCHEMES:
        raise ZooDeskError(
            f"--cluster {value}: not a cluster; give local:N (N worker processes here) or "
            "a Dask scheduler's address such as tcp://scheduler:8786"
        )
    port = match["port"] or "8786"
    if not 0 < int(port) < 65536:
        raise ZooDeskError(f"--cluster {value}: port {port} is out of range")
    return ClusterAddress(address=f"{match['scheme']}://{match['host']}:{port}")


def cluster_choice(option: str | None, setting: str = "") -> ClusterAddress | None:
    """The cluster a run goes to: ``--cluster`` when given, else the ``cluster``
    setting; None (this process) for an empty value or ``none``."""
    value = (option if option is not None else setting or "").strip()
    if not value or value.lower() in ("none", "off"):
        return None
    return parse_cluster(value)
