"""The inputs of a batch run: files found in folders and lists, and their output keys.

A run's inputs are image files, found by :func:`collect_inputs`; each gets a key
(:func:`unique_keys`), the stem of its output names, and :func:`expand_series` makes
each series of a multi-series microscope file an input of its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zoodesk.images.discovery import SkippedFolder


def _sanitize_key(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-/" else "_" for ch in key)


def unique_keys(
    files: Sequence[tuple[Path, Path | None]],
    preferred: Mapping[Path, str] | None = None,
    reserved: Iterable[str] = (),
) -> list[str]:
    """Output name stems: the path below the input folder, made unique.

    Parameters
    ----------
    files
        Each input with the folder it was found in (None for files named directly).
    preferred
        Keys to keep where possible (those of an earlier run into the same output
        folder, so that a re-run finds its outputs under the same names).
    reserved
        Keys no input may take (those of an earlier run's inputs that are not part
        of this one, whose outputs stay in the folder).
    """
    from zoodesk.images import output_stem

    keys: list[str | None] = [None] * len(files)
    seen: set[str] = {k.lower() for k in reserved}
    for i, (path, _root) in enumerate(files):
        key = (preferred or {}).get(path)
        if key and key.lower() not in seen:
            keys[i] = key
            seen.add(key.lower())
    for i, (path, root) in enumerate(files):
        if keys[i] is not None:
            continue
        rel = path.relative_to(root) if root is not None else Path(path.name)
        stem = output_stem(rel)
        key = _sanitize_key("/".join([*rel.parent.parts, stem]) if rel.parent.parts else stem)
        candidate, n = key, 2
        while candidate.lower() in seen:
            candidate, n = f"{key}-{n}", n + 1
        seen.add(candidate.lower())
        keys[i] = candidate
    return [k for k in keys if k is not None]


_LIST_SUFFIXES = (".txt", ".lst", ".list")


def collect_inputs(
    inputs: Sequence[Path],
    patterns: Sequence[str],
    recursive: bool,
    *,
    lists: Sequence[Path] = (),
    exclude: Path | None = None,
    skipped: list[SkippedFolder] | None = None,
) -> tuple[list[tuple[Path, Path | None]], list[Path]]:
    """Files to process (with the folder they were found in) and inputs that do not exist.

    Parameters
    ----------
    inputs
        Files and folders; a file ending in ``.txt``, ``.lst`` or ``.list`` is a list.
    patterns, recursive
        As for :func:`zoodesk.images.find_images`, applied to folders.
    lists
        List files (any name): each line a file or folder, as in ``inputs``.
    exclude
        A folder whose files are never inputs (the output folder: a re-run must not
        take the outputs of the last run for new images).
    skipped
        Receives the folders whose files were not looked at (unreadable, links to
        folders), as for :func:`zoodesk.images.find_images`; each once.
    """
    from zoodesk.images import find_images, read_list_file

    found: list[tuple[Path, Path | None]] = []
    missing: list[Path] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path, root: Path | None) -> None:
        if excluded is not None and path.is_relative_to(excluded):
            return
        if path not in seen:
            seen.add(path)
            found.append((path, root))

    def visit(raw: Path, allow_list: bool) -> None:
        path = Path(raw).expanduser()
        if not path.exists():
            missing.append(path)
            return
        if path.is_dir():
            root = path.resolve()
            problems: list[SkippedFolder] = []
            for p in find_images([path], patterns=patterns, recursive=recursive, skipped=problems):
                add(p.resolve(), root)
            for problem in problems:
                inside = excluded is not None and problem.path.resolve().is_relative_to(excluded)
                if skipped is not None and not inside and problem not in skipped:
                    skipped.append(problem)
        elif allow_list and path.suffix.lower() in _LIST_SUFFIXES:
            for item in read_list_file(path):
                visit(item, allow_list=False)
        else:
            add(path.resolve(), None)

    for raw in inputs:
        visit(raw, allow_list=True)
    for listing in lists:
        path = Path(listing).expanduser()
        if not path.is_file():
            missing.append(path)
            continue
        for item in read_list_file(path):
            visit(item, allow_list=False)
    return found, missing


@dataclass(frozen=True)
class Sample:
    """One input of a run: a file, or one series of a multi-series file."""

    path: Path
    key: str
    series: int
    scene: str | None = None


def expand_series(
    files: Sequence[tuple[Path, Path | None]],
    keys: Sequence[str],
    *,
    series: int | None = None,
    scenes: Sequence[str] = (),
    warnings: list[str] | None = None,
) -> list[Sample]:
    """The inputs of a run: each series of a multi-series microscope file on its own.

    With ``series`` set, every file gives that one series.  Otherwise a file
    whose format holds several series (:func:`zoodesk.images.series_names`) gives one
    input per series, keyed ``<key>[<scene>]``, filtered by ``scenes`` (glob patterns
    on the names, or indices); a
    file none of whose scenes match adds a line to ``warnings``.
    """
    from zoodesk.images import series_names

    patterns = [p.lower() for p in scenes]
    samples: list[Sample] = []
    for (path, _root), key in zip(files, keys, strict=True):
        if series is not None:
            samples.append(Sample(path, key, series))
            continue
        names = series_names(path)
        if len(names) <= 1:
            samples.append(Sample(path, key, 0))
            continue
        chosen = [
            (index, name)
            for index, name in enumerate(names)
            if not patterns
            or any(fnmatch.fnmatchcase(name.lower(), p) or p == str(index) for p in patterns)
        ]
        if not chosen and warnings is not None:
            warnings.append(
                f"{path}: no scene matches --scene {' '.join(scenes)} (scenes: {', '.join(names)})"
            )
        taken: set[str] = set()
        for index, name in chosen:
            label = _sanitize_key(name).replace("/", "-") or str(index)
            if label.lower() in taken:
                label = f"{label}-{index}"
            taken.add(label.lower())
            samples.append(Sample(path, f"{key}[{label}]", index, name))
    return samples
