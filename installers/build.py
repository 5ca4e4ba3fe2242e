"""Build the standalone ZooDesk bundle and the installer for this operating system.

One script for every platform and variant::

    python installers/build.py --variant cpu [--version 0.1.0] [--venv build/venv-cpu]

1. With ``--venv``: create that virtual environment if needed and install ZooDesk,
   its ``gui`` and ``packaging`` extras (PyInstaller) and exactly one ONNX Runtime
   distribution, the variant's (pins read from pyproject.toml).  Without it the
   running interpreter is used as it is, and must already hold the variant's
   runtime.
2. Run PyInstaller on ``packaging.spec``: ``dist/zoodesk`` (and ``dist/ZooDesk.app``
   on macOS).
3. Make the installer in ``dist/installers``:

   - Linux: ``zoodesk-VERSION-linux-ARCH-VARIANT.tar.gz`` (bundle, ``install.sh``,
     desktop entry, file type, icon) and, with ``--deb``, a ``.deb``;
   - Windows: ``zoodesk-VERSION-windows-x64-VARIANT-setup.exe`` (Inno Setup 6's
     ``iscc`` on PATH or in its default folder);
   - macOS: ``zoodesk-VERSION-macos-ARCH-VARIANT.dmg`` (``dmgbuild``).

4. With ``--smoke``: run ``tools/smoke_bundle.py`` on the bundle.

On Linux the bundle carries the X11 (xcb) libraries that Qt's xcb platform plugin
needs and a bare desktop lacks (``tools/desktop_sandbox.py``): PyInstaller copies
them from the build machine, so the build stops, before PyInstaller runs, when the
build machine lacks them, and checks afterwards that they are in the bundle.  The
.deb also declares them as dependencies.

Variants: ``cpu`` (everywhere; CoreML is part of it on macOS), ``directml``
(Windows GPUs), ``cuda`` (Linux NVIDIA GPUs; CUDA 12 and cuDNN 9 come from the
workstation's NVIDIA installation, they are not bundled), and ``full``: the CPU
runtime plus CPU torch and onnx, so that the installed application converts
PyTorch weights to ONNX itself (its own executable runs the conversion worker).
The other variants run ONNX weights only.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALLERS = ROOT / "installers"
DIST = ROOT / "dist"
BUNDLE = DIST / "zoodesk"
OUTPUT = DIST / "installers"

#: ONNX Runtime distribution of each variant, and the platforms it exists for.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpu": ("onnxruntime", ("linux", "win32", "darwin")),
    "directml": ("onnxruntime-directml", ("win32",)),
    "cuda": ("onnxruntime-gpu", ("linux",)),
    "full": ("onnxruntime", ("linux", "win32", "darwin")),
}
#: Distributions a variant adds to the bundle, pinned as in pyproject.toml's
#: ``convert`` extra (torch is its CPU build: see docs/installers.md).
VARIANT_ADDITIONS: dict[str, tuple[str, ...]] = {"full": ("torch", "onnx")}
#: Environment variable that tells packaging.spec which variant it builds.
VARIANT_VARIABLE = "ZOODESK_BUNDLE_VARIANT"
RUNTIMES = tuple(dict.fromkeys(dist for dist, _ in VARIANTS.values()))
#: Used when pyproject.toml has no ``packaging`` extra yet.
FALLBACK_PACKAGING_REQUIREMENTS = ("pyinstaller==6.22.3",)
#: Packages the .deb needs from the system besides the xcb libraries of
#: :func:`bare_desktop_lacks` (the bundle does not carry these: libxcb, OpenGL and EGL
#: must be the system's own, to match its graphics drivers).
DEB_BASE_DEPENDS = ("libc6 (>= 2.28)", "libgl1", "libegl1", "libxcb1", "libfontconfig1")


class BuildError(Exception):
    """A build step that cannot go on; the message says why and what to do."""


def log(message: str) -> None:
    """Print a progress line."""
    print(f"[build] {message}", flush=True)


def run(command: Sequence[str | Path], cwd: Path | None = None) -> None:
    """Run a command, echoing it; raise BuildError when it fails."""
    shown = " ".join(str(c) for c in command)
    log(f"$ {shown}")
    result = subprocess.run([str(c) for c in command], cwd=cwd, check=False)
    if result.returncode != 0:
        raise BuildError(f"failed with exit code {result.returncode}: {shown}")


# ------------------------------------------------------------------ versions and pins


def package_version() -> str:
    """``zoodesk.__version__`` as written in the source tree."""
    text = (ROOT / "app" / "zoodesk" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise BuildError("app/zoodesk/__init__.py: no __version__ found")
    return match.group(1)


def checked_version(requested: str | None) -> str:
    """The version to build: the package's; a requested one (``v`` prefix allowed) must match."""
    version = package_version()
    if requested is None:
        return version
    wanted = requested.removeprefix("v")
    if wanted != version:
        raise BuildError(
            f"--version {requested} but the sources say {version} (app/zoodesk/__init__.py); "
            "update __version__ first so that the bundle and its installer agree"
        )
    return version


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def runtime_requirement(variant: str) -> str:
    """The pinned requirement (``name==version``) of the variant's ONNX Runtime."""
    dist = VARIANTS[variant][0]
    try:
        return pinned_requirement(dist)
    except BuildError as exc:
        raise BuildError(f"{exc} (needed for the {variant} variant)") from exc


def pinned_requirement(dist: str) -> str:
    """The requirement (``name==version``) pyproject.toml pins for ``dist``."""
    project = _pyproject()["project"]
    candidates = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        candidates += extra
    pattern = re.compile(rf"^\s*{re.escape(dist)}\s*==\s*([^;\s]+)", re.IGNORECASE)
    for requirement in candidates:
        match = pattern.match(requirement)
        if match:
            return f"{dist}=={match.group(1)}"
    raise BuildError(f"pyproject.toml pins no {dist}")


def project_extras() -> list[str]:
    """The extras of the project that a bundle build installs (those that exist)."""
    extras = _pyproject()["project"].get("optional-dependencies", {})
    return [name for name in ("gui", "packaging") if name in extras]


# ------------------------------------------------------------ xcb libraries (Linux)


def bare_desktop_lacks() -> dict[str, str]:
    """The xcb libraries (file name: Debian package) that the Linux bundle must carry.

    The list is ``tools/desktop_sandbox.py``'s, which the smoke test hides.
    """
    try:
        from tools.desktop_sandbox import BARE_DESKTOP_LACKS
    except ImportError:
        # Run as a script (python installers/build.py): the root is not on the path.
        sys.path.insert(0, str(ROOT / "tools"))
        from desktop_sandbox import BARE_DESKTOP_LACKS
    return dict(BARE_DESKTOP_LACKS)


def deb_depends() -> str:
    """The .deb's ``Depends`` field: the system basics and the xcb libraries."""
    return ", ".join([*DEB_BASE_DEPENDS, *dict.fromkeys(bare_desktop_lacks().values())])


def missing_build_libraries() -> dict[str, str]:
    """The xcb libraries this build machine cannot load (file name: package)."""
    missing = {}
    for name, package in bare_desktop_lacks().items():
        try:
            ctypes.CDLL(name)
        except OSError:
            missing[name] = package
    return missing


def missing_bundled_libraries(bundle: Path) -> list[str]:
    """The xcb libraries that are not in the bundle folder."""
    present = {p.name for p in bundle.rglob("*.so*")}
    return [name for name in bare_desktop_lacks() if name not in present]


def check_build_libraries() -> None:
    """Refuse a Linux build whose bundle would lack the xcb libraries."""
    missing = missing_build_libraries()
    if missing:
        raise BuildError(
            "the Linux bundle carries the X11 libraries that Qt's xcb platform needs, "
            f"but this machine lacks {', '.join(missing)}: install them with "
            f"`sudo apt install {' '.join(dict.fromkeys(missing.values()))}`, or pass "
            "--without-xcb-libraries for a bundle that needs them on the workstation"
        )


def check_bundled_libraries(bundle: Path) -> None:
    """Refuse a Linux bundle that PyInstaller made without the xcb libraries."""
    missing = missing_bundled_libraries(bundle)
    if missing:
        raise BuildError(
            f"{bundle} lacks {', '.join(missing)}, although this machine has them: "
            "PyInstaller did not collect them with Qt's xcb platform plugin "
            "(see installers/hooks/hook-PySide6.QtGui.py)"
        )


# ------------------------------------------------------------------ build environment


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def installed_runtimes(python: Path) -> list[str]:
    """ONNX Runtime distributions installed for an interpreter."""
    code = (
        "from importlib import metadata\n"
        f"for name in {RUNTIMES!r}:\n"
        "    try:\n"
        "        metadata.distribution(name)\n"
        "    except metadata.PackageNotFoundError:\n"
        "        continue\n"
        "    print(name)\n"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def prepare_venv(venv: Path, variant: str) -> Path:
    """Create or update the build environment with exactly the variant's runtime."""
    python = venv_python(venv)
    if not python.exists():
        run([sys.executable, "-m", "venv", venv])
    pip: list[str | Path] = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    run([*pip, "--upgrade", "pip"])
    extras = project_extras()
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    run([*pip, target])
    if "packaging" not in extras:
        run([*pip, *FALLBACK_PACKAGING_REQUIREMENTS])
    wanted = runtime_requirement(variant)
    dist = VARIANTS[variant][0]
    if installed_runtimes(python) != [dist]:
        # The distributions share the `onnxruntime` package folder: remove them all
        # before installing one, or files of two runtimes would mix.
        run([python, "-m", "pip", "uninstall", "-y", *RUNTIMES])
        run([*pip, wanted])
    additions = [pinned_requirement(d) for d in VARIANT_ADDITIONS.get(variant, ())]
    if additions:
        run([*pip, *additions])
    return python


def check_runtime(python: Path, variant: str) -> None:
    """Refuse to build a variant whose runtime is not the only one installed."""
    found = installed_runtimes(python)
    dist = VARIANTS[variant][0]
    if found != [dist]:
        raise BuildError(
            f"the {variant} variant needs {dist} alone, but {python} has "
            f"{', '.join(found) or 'no ONNX Runtime'}; pass --venv DIR to build in a "
            "separate environment that this script prepares"
        )
    missing = [d for d in VARIANT_ADDITIONS.get(variant, ()) if not _has_distribution(python, d)]
    if missing:
        raise BuildError(
            f"the {variant} variant bundles {', '.join(missing)}, which {python} lacks; "
            "pass --venv DIR to build in an environment that this script prepares"
        )


def _has_distribution(python: Path, dist: str) -> bool:
    code = f"from importlib import metadata; metadata.distribution({dist!r})"
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- bundle


def build_bundle(python: Path, variant: str, clean: bool) -> None:
    """Run PyInstaller on packaging.spec."""
    command: list[str | Path] = [
        python, "-m", "PyInstaller", ROOT / "packaging.spec", "--noconfirm",
        "--distpath", DIST, "--workpath", ROOT / "build" / f"pyinstaller-{variant}",
    ]  # fmt: skip
    if clean:
        command.append("--clean")
    os.environ[VARIANT_VARIABLE] = variant
    run(command, cwd=ROOT)
    if not (BUNDLE / exe_name("zoodesk-cli")).is_file():
        raise BuildError(f"PyInstaller finished but {BUNDLE} has no zoodesk-cli")


def exe_name(stem: str) -> str:
    """An executable's file name on this platform."""
    return f"{stem}.exe" if sys.platform == "win32" else stem


def folder_size(folder: Path) -> int:
    """Bytes of all regular files under ``folder`` (links not followed)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def machine() -> str:
    """The processor architecture as installer names carry it (x86_64, arm64)."""
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "aarch64": "arm64"}.get(arch, arch)


# ---------------------------------------------------------------------------- Linux


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def linux_tarball(version: str, variant: str) -> Path:
    """The per-user archive: bundle, install.sh, desktop entry, file type and icon."""
    name = f"zoodesk-{version}-linux-{machine()}-{variant}"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"{name}.tar.gz"
    partial = target.with_name(target.name + ".part")
    linux = INSTALLERS / "linux"
    log(f"writing {target}")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(BUNDLE, arcname=f"{name}/zoodesk", filter=_root_owned)
        tar.add(linux / "install.sh", arcname=f"{name}/install.sh", filter=_root_owned)
        tar.add(linux / "zoodesk.desktop", arcname=f"{name}/zoodesk.desktop", filter=_root_owned)
        tar.add(linux / "zoodesk-mime.xml", arcname=f"{name}/zoodesk-mime.xml", filter=_root_owned)
        tar.add(ROOT / "resources" / "icons" / "zoodesk.png", arcname=f"{name}/zoodesk.png",
                filter=_root_owned)  # fmt: skip
    partial.replace(target)
    return target


def linux_deb(version: str, variant: str) -> Path:
    """A .deb that installs into /opt/zoodesk with commands in /usr/bin."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise BuildError("dpkg-deb not found: install dpkg, or build without --deb")
    package = "zoodesk" if variant == "cpu" else f"zoodesk-{variant}"
    others = [p for p in ("zoodesk", "zoodesk-cuda") if p != package]
    arch = {"x86_64": "amd64"}.get(machine(), machine())
    stage = ROOT / "build" / f"deb-{variant}"
    shutil.rmtree(stage, ignore_errors=True)
    linux = INSTALLERS / "linux"
    opt = stage / "opt" / "zoodesk"
    shutil.copytree(BUNDLE, opt, symlinks=True)
    (stage / "usr" / "bin").mkdir(parents=True)
    for exe in ("zoodesk", "zoodesk-cli"):
        (stage / "usr" / "bin" / exe).symlink_to(f"/opt/zoodesk/{exe}")
    share = stage / "usr" / "share"
    (share / "applications").mkdir(parents=True)
    shutil.copy2(linux / "zoodesk.desktop", share / "applications" / "zoodesk.desktop")
    (share / "mime" / "packages").mkdir(parents=True)
    shutil.copy2(linux / "zoodesk-mime.xml", share / "mime" / "packages" / "zoodesk.xml")
    icons = share / "icons" / "hicolor" / "256x256" / "apps"
    icons.mkdir(parents=True)
    shutil.copy2(ROOT / "resources" / "icons" / "zoodesk.png", icons / "zoodesk.png")
    debian = stage / "DEBIAN"
    debian.mkdir()
    installed_kb = folder_size(stage) // 1024 + 1
    description = {
        "cpu": "CPU build",
        "cuda": "NVIDIA CUDA build (needs the NVIDIA driver, CUDA 12 and cuDNN 9)",
        "full": "CPU build with PyTorch, which converts model weights to ONNX",
    }.get(variant, f"{variant} build")
    (debian / "control").write_text(
        f"Package: {package}\n"
        f"Version: {version}\n"
        "Section: science\n"
        "Priority: optional\n"
        f"Architecture: {arch}\n"
        "Maintainer: ZooDesk developers <zoodesk@users.noreply.github.com>\n"
        f"Installed-Size: {installed_kb}\n"
        f"Depends: {deb_depends()}\n"
        f"Conflicts: {', '.join(others)}\n"
        f"Replaces: {', '.join(others)}\n"
        f"Description: Run BioImage Model Zoo models offline ({description})\n"
        " ZooDesk runs bioimage.io models through ONNX Runtime on folders of\n"
        " microscopy images, without Python and without network, and records\n"
        " how every result was made.\n",
        encoding="utf-8",
    )
    refresh = (
        "#!/bin/sh\nset -e\n"
        "if command -v update-mime-database >/dev/null 2>&1; then "
        "update-mime-database /usr/share/mime || true; fi\n"
        "if command -v update-desktop-database >/dev/null 2>&1; then "
        "update-desktop-database -q /usr/share/applications || true; fi\n"
    )
    for script in ("postinst", "postrm"):
        path = debian / script
        path.write_text(refresh, encoding="utf-8")
        path.chmod(0o755)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"{package}_{version}_{arch}.deb"
    run([dpkg_deb, "--root-owner-group", "-Zgzip", "--build", stage, target])
    return target


# -------------------------------------------------------------------- Windows, macOS


def find_iscc() -> Path:
    """Inno Setup's command-line compiler."""
    found = shutil.which("iscc")
    if found:
        return Path(found)
    for base in (os.environ.get("PROGRAMFILES(X86)"), os.environ.get("PROGRAMFILES")):
        if base and (Path(base) / "Inno Setup 6" / "ISCC.exe").is_file():
            return Path(base) / "Inno Setup 6" / "ISCC.exe"
    raise BuildError("Inno Setup 6 not found (iscc): install it, e.g. `choco install innosetup`")


def windows_installer(version: str, variant: str) -> Path:
    """The per-user setup program, compiled by Inno Setup."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    run([
        find_iscc(), f"/DAppVersion={version}", f"/DVariant={variant}",
        f"/DBundleDir={BUNDLE}", f"/DOutputDir={OUTPUT}", INSTALLERS / "windows" / "zoodesk.iss",
    ])  # fmt: skip
    return OUTPUT / f"zoodesk-{version}-windows-x64-{variant}-setup.exe"


def macos_dmg(version: str, variant: str) -> Path:
    """The disk image holding ZooDesk.app and a link to /Applications.

    dmgbuild runs in the interpreter running this script (``pip install dmgbuild``),
    not in the build environment: it is not part of the bundle.
    """
    app = DIST / "ZooDesk.app"
    if not app.is_dir():
        raise BuildError(f"{app} is missing: PyInstaller makes it on macOS only")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"zoodesk-{version}-macos-{machine()}-{variant}.dmg"
    target.unlink(missing_ok=True)
    run([
        sys.executable, "-m", "dmgbuild", "-s", INSTALLERS / "macos" / "settings.py",
        "-D", f"app={app}", "-D", f"icon={ROOT / 'resources' / 'icons' / 'zoodesk.icns'}",
        f"ZooDesk {version}", target,
    ])  # fmt: skip
    return target


# ----------------------------------------------------------------------------- main


def build(args: argparse.Namespace) -> list[Path]:
    """Every step for the current platform; returns the installers made."""
    variant = args.variant
    platform_key = "linux" if sys.platform.startswith("linux") else sys.platform
    if platform_key not in VARIANTS[variant][1]:
        raise BuildError(
            f"the {variant} variant is built on {', '.join(VARIANTS[variant][1])} only"
        )
    version = checked_version(args.version)
    log(f"ZooDesk {version}, {variant} variant, {sys.platform} {machine()}")
    xcb_libraries = sys.platform.startswith("linux") and not args.without_xcb_libraries
    if xcb_libraries:
        check_build_libraries()
    python = prepare_venv(args.venv.resolve(), variant) if args.venv else Path(sys.executable)
    check_runtime(python, variant)

    started = time.perf_counter()
    build_bundle(python, variant, clean=args.clean)
    if xcb_libraries:
        check_bundled_libraries(BUNDLE)
    size = folder_size(BUNDLE)
    log(f"bundle {BUNDLE}: {size / 1e6:.0f} MB unpacked ({time.perf_counter() - started:.0f} s)")

    made: list[Path] = []
    if not args.bundle_only:
        if sys.platform.startswith("linux"):
            made.append(linux_tarball(version, variant))
            if args.deb:
                made.append(linux_deb(version, variant))
        elif sys.platform == "win32":
            made.append(windows_installer(version, variant))
        elif sys.platform == "darwin":
            made.append(macos_dmg(version, variant))
    for path in made:
        log(f"installer {path}: {path.stat().st_size / 1e6:.0f} MB")

    if args.smoke:
        run([sys.executable, ROOT / "tools" / "smoke_bundle.py", BUNDLE,
             "--expect-version", version])  # fmt: skip
    return made


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the build script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cpu",
                        help="ONNX Runtime build to bundle (default: cpu)")  # fmt: skip
    parser.add_argument("--version", default=None,
                        help="version to build; must match zoodesk.__version__ "
                        "(default: that version; a leading v is ignored)")  # fmt: skip
    parser.add_argument("--venv", type=Path, default=None, metavar="DIR",
                        help="build in this virtual environment, created and filled as "
                        "needed (default: the running interpreter, unchanged)")  # fmt: skip
    parser.add_argument("--clean", action="store_true", help="empty PyInstaller's cache first")
    parser.add_argument("--bundle-only", action="store_true", help="stop after PyInstaller")
    parser.add_argument("--deb", action="store_true", help="Linux: also make a .deb")
    parser.add_argument("--without-xcb-libraries", action="store_true",
                        help="Linux: build even where this machine lacks the X11 "
                        "libraries that the bundle should carry (the workstation then "
                        "needs them)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="run tools/smoke_bundle.py on the bundle at the end")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        build(args)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
