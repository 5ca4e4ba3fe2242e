"""Text for people in the desktop application: its own words, wrapped tooltips, local times.

The engine's messages are written for both front ends and name the command line's
options ("choose one with --channel").  In the desktop application the same advice
names the control instead ("choose one in Channel"): :func:`in_gui_words` rewrites
a message with the one table below, so the command line's messages stay as they
are.  Validation problems ("field 'authors.0.orcid': Value error, ...") become plain
words through :mod:`zoodesk.plain_words`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from zoodesk.plain_words import plain_problem_line, plain_quoted_fields

#: Advice that names a command line option or command, and the same advice in the
#: desktop application's words.  Phrases first; the options alone last.
GUI_PHRASES: tuple[tuple[str, str], ...] = (
    # Batch page
    (r"(?:choose|pick) (?:one )?with --channel", "choose one in Channel"),
    (r"--channel given but", "a channel is chosen in Channel but"),
    (r"no scene matches --scene (.+?) \(", r"no scene matches “\1” in Scenes ("),
    (
        r"use --overwrite to redo every input",
        "tick “Redo files already done” to redo every input",
    ),
    (r"choose one with --instances", "choose one in Method"),
    (
        r"write into another --output folder, or add --add to add this run's inputs to that run",
        "choose another output folder, or add this run's inputs to that run",
    ),
    (r"zoodesk measure remakes", "Remake objects… on the Results page remakes"),
    (r"the same 'zoodesk predict' command again", "the same batch run again"),
    (r"'zoodesk predict' again", "the batch run again"),
    # Export dialog
    (
        r"\(use --overwrite to replace an earlier export\)",
        "(tick “Replace an earlier export there” to replace an earlier export)",
    ),
    (r"--overwrite only replaces", "“Replace an earlier export there” only replaces"),
    # Library page
    (r"'zoodesk catalogue refresh'", "Refresh zoo catalogue (F5)"),
    (r"'zoodesk bundle import FILE'", "Import… ▸ Import offline bundle"),
    (r"zoodesk bundle export", "Export bundle…"),
    (r"'zoodesk models download [^']*'", "Download in the model library"),
    (r"'zoodesk models import PATH'", "Import… in the model library"),
    (r"'zoodesk models\s+convert[^']*'", "Convert to ONNX in the model library"),
    (r"run 'zoodesk models verify' and ", ""),
    (r"ask for it with --replace", "remove the ONNX weights first"),
    (
        r"convert with --trust-code only if",
        "answer Yes to “Run the model's code?” only if",
    ),
    # Settings
    (
        r"\(network_enabled is false\)",
        "(Allow network access is off in Settings)",
    ),
)

#: Command line options by the control that sets them in the desktop application.
OPTION_CONTROLS: Mapping[str, str] = {
    "--axes": "Image axes",
    "--channel": "Channel",
    "--scene": "Scenes",
    "--series": "Scenes",
    "--instances": "Objects",
    "--overwrite": "Redo files already done",
    "--cluster": "Run on",
    "--device": "Device",
    "--tile": "tile size",
    "--weights": "weights format",
}

_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z\-]*")
_COMPILED = tuple((re.compile(pattern), words) for pattern, words in GUI_PHRASES)

#: Longest tooltip shown as plain text (on one line).
TOOLTIP_PLAIN_MAX = 80


def in_gui_words(text: str, controls: Mapping[str, str] | None = None) -> str:
    """A message of the engine with the desktop application's control names.

    Parameters
    ----------
    text
        The message as the engine words it (for the command line).
    controls
        Control names that replace those of :data:`OPTION_CONTROLS` where a window
        names the option's control differently (the settings dialog's "Run batches
        on", say).
    """
    names = {**OPTION_CONTROLS, **(controls or {})}
    for pattern, words in _COMPILED:
        text = pattern.sub(words, text)
    text = _OPTION.sub(lambda m: f"“{names[m[0]]}”" if m[0] in names else m[0], text)
    text = plain_quoted_fields(text)
    return re.sub(r"[ \t]{2,}", " ", text)


def plain_problem_lines(lines: tuple[str, ...] | list[str]) -> list[str]:
    """Validation problems (``"authors.0.orcid: Value error, ..."``) in plain words."""
    return [plain_problem_line(line) for line in lines]


def problem_first(text: str, path: Path | str | None = None) -> tuple[str, str]:
    """Split ``"PATH: problem"`` into ``(problem, PATH)``, the problem in GUI words.

    ``path`` is the file the message is about when known; otherwise a leading
    ``"something/with/slashes: "`` is taken for the path.  Without one the path
    part is empty.
    """
    text = text.strip()
    where = ""
    if path is not None and text.startswith(f"{path}: "):
        where = str(path)
    else:
        head, sep, _rest = text.partition(": ")
        if sep and ("/" in head or "\\" in head) and " " not in head.strip("/\\"):
            where = head
    problem = text[len(where) + 2 :] if where else text
    return in_gui_words(problem), where


def problem_cell(text: str, path: Path | str | None = None) -> tuple[str, str]:
    """The text and tooltip of a table cell showing a problem: the problem first,
    the path second (the tooltip wraps).

    For the batch page's *Fits the model* cells and the results table's *Problem*
    cells, whose texts start with the file's path.
    """
    problem, where = problem_first(text, path)
    cell = f"{problem} — {where}" if where else problem
    tip = f"{problem}\n{where}" if where else problem
    return cell, rich_tooltip(tip)


def rich_tooltip(text: str) -> str:
    """Long tooltip text as rich text, so that Qt wraps it.

    Qt shows a plain-text tooltip on one line however long it is, wider than the
    screen for a long path or message; a rich-text tooltip is wrapped.  Short
    texts stay as they are; the lines of ``text`` stay lines.
    """
    if not text or (len(text) <= TOOLTIP_PLAIN_MAX and "\n" not in text):
        return text
    return "<qt>" + "<br>".join(html.escape(line) for line in text.splitlines()) + "</qt>"


def local_time(when: datetime | str | None, *, seconds: bool = False) -> str:
    """A time as this computer's clock shows it: ``"2026-05-20 14:03"`` (with
    ``:SS`` when ``seconds``).

    ``when`` is a datetime or ISO 8601 text (times without a zone are taken as UTC,
    as ZooDesk records them); empty for None, and text that is not a time is
    returned as it is.
    """
    if not when:
        return ""
    try:
        moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    except ValueError:
        return str(when)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
