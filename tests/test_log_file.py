"""The log file: moved aside when full, never a reason for a command to fail."""

from __future__ import annotations

import logging
from pathlib import Path

from zoodesk.logs import LOG_FILE_NAME, RotatingLogFile


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"zoodesk.test-log-file.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_a_full_log_moves_aside_and_only_the_last_three_are_kept(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE_NAME
    handler = RotatingLogFile(path, max_bytes=200, backups=3)
    logger = _logger(handler)
    for number in range(60):
        logger.info("record %03d %s", number, "x" * 40)
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [LOG_FILE_NAME] + [f"{LOG_FILE_NAME}.{n}" for n in (1, 2, 3)]
    for name in names:
        assert (tmp_path / name).stat().st_size <= 200 + 60  # a record may end past the limit
    # The newest records are in the current file, the ones before in .1.
    assert "record 059" in path.read_text()
    assert "record 059" not in (tmp_path / f"{LOG_FILE_NAME}.1").read_text()
    previous = int((tmp_path / f"{LOG_FILE_NAME}.1").read_text().split("record ")[-1][:3])
    current = int(path.read_text().split("record ")[1][:3])
    assert previous + 1 == current


def test_an_existing_full_log_is_moved_aside_at_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE_NAME
    path.write_text("old\n" * 100)
    handler = RotatingLogFile(path, max_bytes=100)
    logger = _logger(handler)
    logger.info("new")
    handler.close()
    assert path.read_text().strip().endswith("new") and "old" not in path.read_text()
    assert (tmp_path / f"{LOG_FILE_NAME}.1").read_text().startswith("old")


def test_a_log_that_cannot_be_opened_is_no_handler(tmp_path: Path) -> None:
    from zoodesk.logs import log_file_handler

    (tmp_path / LOG_FILE_NAME).mkdir()  # a folder where the file should be
    assert log_file_handler(tmp_path) is None
