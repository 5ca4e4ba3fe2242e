"""A Linux desktop without Qt's extra X11 libraries, for testing how ZooDesk starts there.

Qt 6.5 and later need X11 (xcb) libraries that a bare Linux desktop does not have
(:data:`BARE_DESKTOP_LACKS`).  A machine that has them can still show what happens
without them:

- :func:`hiding_prefix` makes a command prefix that runs the command in a private
  mount namespace (``unshare``) where an empty file is mounted over every system
  copy of those libraries, so that the dynamic loader cannot load them;
- :class:`XvfbDisplay` runs a virtual X server (Xvfb) for the xcb platform.

The standalone bundle must still show its window there (it carries its own copies),
and a pip installation must say in one line what to install.  Used by
``tools/smoke_bundle.py``, ``installers/build.py`` and the tests; standard library
only.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

#: Libraries of Qt's xcb platform plugin that a bare Linux desktop lacks, with the
#: Debian/Ubuntu package of each: the README's apt line, the .deb's dependencies,
#: and what the Linux bundle carries.
BARE_DESKTOP_LACKS: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}
#: First X display number tried: clear of a desktop's :0 and of ssh's forwarding
#: (:10 and up).
FIRST_DISPLAY = 81
#: Seconds Xvfb may take to open its socket.
XVFB_START_TIMEOUT = 20.0
#: Prints the libraries of the command line that still load (one per line).
_LOAD_PROBE = (
    "import ctypes, sys\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        ctypes.CDLL(name)\n"
    "    except OSError:\n"
    "        continue\n"
    "    print(name)\n"
)


def system_copies(sonames: list[str]) -> list[Path]:
    """The files behind every system copy of ``sonames`` (links resolved).

    Looked up in the dynamic loader's cache (``ldconfig -p``) and in the usual
    library folders.
    """
    found: set[Path] = set()
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        name, _, target = line.strip().partition(" => ")
        if name.split(" ", 1)[0] in sonames and target:
            found.add(Path(target).resolve())
    folders = [Path(f) for f in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")]
    folders += [*Path("/lib").glob("*-linux-gnu*"), *Path("/usr/lib").glob("*-linux-gnu*")]
    for folder in folders:
        for name in sonames:
            path = folder / name
            if path.exists():
                found.add(path.resolve())
    return sorted(found)


def hiding_prefix(sonames: list[str]) -> tuple[list[str] | None, str]:
    """A command prefix that runs a command where ``sonames`` cannot be loaded.

    Returns
    -------
    tuple
        ``(prefix, note)``; the prefix is None where this system does not allow it
        (not Linux, no ``unshare``, no mount namespace for this user, or a copy that
        still loads), and the note says why.
    """
    if not sys.platform.startswith("linux"):
        return None, "hiding libraries needs Linux mount namespaces"
    # Absolute paths: the command's own environment may have a PATH without them.
    unshare, mount, shell = (shutil.which(c) for c in ("unshare", "mount", "sh"))
    if unshare is None or mount is None or shell is None:
        return None, "no unshare and mount commands (util-linux) to hide the system libraries"
    files = system_copies(sonames)
    mounts = "".join(f"{mount} --bind /dev/null {shlex.quote(str(f))}\n" for f in files)
    script = f'set -e\n{mounts}exec "$@"\n'
    # Root makes a mount namespace directly; other users inside a user namespace
    # of their own, where the system allows it.
    namespace = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    prefix = [unshare, *namespace, "--propagation", "private", shell, "-c", script, "sh"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", _LOAD_PROBE, *sonames],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"cannot hide the system libraries in a mount namespace: {reason}"
    if probe.stdout.split():
        return None, f"these still load with their system copies hidden: {probe.stdout.split()}"
    return prefix, f"{len(files)} system libraries hidden: {', '.join(sonames)}"


class XvfbDisplay:
    """A virtual X server (Xvfb) for the lifetime of a ``with`` block.

    ``name`` is its ``DISPLAY`` value (``":81"``); the first display number from
    :data:`FIRST_DISPLAY` that no other server holds is taken.

    Raises
    ------
    RuntimeError
        On entering, when Xvfb is not installed or does not start.
    """

    def __init__(self, width: int = 1366, height: int = 768) -> None:
        self.screen = f"{width}x{height}x24"
        self.name = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def __enter__(self) -> XvfbDisplay:
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            raise RuntimeError("Xvfb is not installed (apt install xvfb)")
        for number in range(FIRST_DISPLAY, FIRST_DISPLAY + 100):
            if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
                continue
            if self._start(xvfb, number):
                return self
        raise RuntimeError(f"Xvfb did not start on any display from :{FIRST_DISPLAY}")

    def _start(self, xvfb: str, number: int) -> bool:
        handle, log = tempfile.mkstemp(prefix=f"xvfb-{number}-", suffix=".log")
        self._log = Path(log)
        with os.fdopen(handle, "wb") as log_file:
            process = subprocess.Popen(
                [xvfb, f":{number}", "-screen", "0", self.screen, "-nolisten", "tcp"],
                stdout=log_file,
                stderr=log_file,
            )
        socket = Path(f"/tmp/.X11-unix/X{number}")
        deadline = time.monotonic() + XVFB_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # Another server took the number first: try the next one.
                self._log.unlink(missing_ok=True)
                return False
            if socket.exists():
                self._process, self.name = process, f":{number}"
                return True
            time.sleep(0.05)
        process.kill()
        process.wait()
        self._log.unlink(missing_ok=True)
        return False

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
