"""Safe extraction of model package archives.

A zip from the internet or a USB stick is untrusted: members with absolute paths,
``..`` components, links, or sizes far beyond reason are refused before anything is
written, and nothing is ever written outside the destination folder.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from zoodesk.errors import ModelPackageError
from zoodesk.fileutils import temporary_sibling, write_error_reason

#: Refuse archives that would unpack to more than this (a zoo model is < 1 GB).
MAX_UNPACKED_BYTES = 8 * 1024**3
#: Refuse members compressed more than this ratio (zip bombs).
MAX_COMPRESSION_RATIO = 200
MAX_MEMBERS = 10_000


#: Longest file or folder name in a member path, in bytes (common file systems' limit).
MAX_NAME_BYTES = 255


def check_member_name(archive: Path, name: str) -> PurePosixPath:
    """Return the member's safe relative path or raise naming the offending member."""
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    shown = name if len(name) <= 80 else f"{name[:77]}..."
    if (
        normalized.startswith("/")
        or (len(normalized) > 1 and normalized[1] == ":")
        or any(part == ".." for part in path.parts)
    ):
        raise ModelPackageError(f"{archive}: refused member {shown!r}: path leaves the package")
    parts = [part for part in path.parts if part != "."]
    if not parts:
        raise ModelPackageError(f"{archive}: refused member {shown!r}: it names no file")
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        raise ModelPackageError(
            f"{archive}: refused member {shown!r}: a name longer than {MAX_NAME_BYTES} bytes"
        )
    return PurePosixPath(*parts)


def validate_zip(archive: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> list[zipfile.ZipInfo]:
    """Check every member of ``archive``; return the file members to extract."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelPackageError(f"{archive}: not a readable zip file ({exc})") from exc
    with zf:
        infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelPackageError(f"{archive}: refused: {len(infos)} members is far too many")
    total = 0
    files: list[zipfile.ZipInfo] = []
    seen: set[PurePosixPath] = set()
    for info in infos:
        path = check_member_name(archive, info.filename)
        if path in seen and not info.is_dir():
            # zipfile would extract the last one silently: which is meant is unknown.
            raise ModelPackageError(
                f"{archive}: refused member {info.filename!r}: it appears twice"
            )
        seen.add(path)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ModelPackageError(f"{archive}: refused member {info.filename!r}: it is a link")
        if info.is_dir():
            continue
        ratio = info.file_size / max(info.compress_size, 1)
        if info.compress_size and ratio > MAX_COMPRESSION_RATIO:
            raise ModelPackageError(
                f"{archive}: refused member {info.filename!r}: implausible compression ratio"
            )
        total += info.file_size
        if total > max_bytes:
            raise ModelPackageError(
                f"{archive}: refused: unpacks to more than {max_bytes / 1024**3:.1f} GB"
            )
        files.append(info)
    _check_files_and_folders(archive, files)
    return files


def _check_files_and_folders(archive: Path, files: list[zipfile.ZipInfo]) -> None:
    """Refuse a member that is a file for one entry and a folder for another."""
    normalized = {check_member_name(archive, i.filename): i.filename for i in files}
    for path, name in normalized.items():
        for parent in path.parents:
            if parent in normalized:
                raise ModelPackageError(
                    f"{archive}: refused member {name!r}: {normalized[parent]!r} is a file "
                    "in the archive, not a folder"
                )


def safe_extract_zip(archive: Path, destination: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Extract ``archive`` into the new folder ``destination`` after validating it.

    Extraction goes to a temporary sibling folder that is renamed at the end, so a
    failure never leaves a half-extracted package under the final name.
    """
    archive = Path(archive)
    destination = Path(destination)
    members = validate_zip(archive, max_bytes)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(destination)
    staging.unlink()
    staging.mkdir()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in members:
                rel = check_member_name(archive, info.filename)
                target = staging.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        # The header's size may lie; count what really comes out.
                        if written > info.file_size:
                            raise ModelPackageError(
                                f"{archive}: refused member {info.filename!r}: "
                                "larger than its header declares"
                            )
                        dst.write(chunk)
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except OSError as exc:
        # A full disk, a read-only folder: say so, and leave nothing behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelPackageError(
            f"{archive}: cannot unpack into {destination.parent}: {write_error_reason(exc)}"
        ) from exc
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # zipfile stops at the size a header declares and then fails its CRC check:
        # that is how a member larger than declared shows up.
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelPackageError(
            f"{archive}: refused: damaged archive, or a member whose content does not "
            f"match its header ({exc})"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
