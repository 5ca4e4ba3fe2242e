"""Deposition packages: a finished run as a BioImage Archive / Zenodo / RO-Crate folder.

The layout is described in ``docs/export-format.md``.  :func:`export_run` writes a
package (a generator of events for front ends, :func:`run_export` blocks);
:func:`check_package` re-verifies one; the study metadata comes from a YAML file
(:func:`write_template`, :func:`load_study_metadata`) or the application's form, and
the last one used is remembered (:func:`save_last_study_metadata`,
:func:`load_last_study_metadata`).
"""

from zoodesk.export.checks import Problem, check_package
from zoodesk.export.package import (
    ExportEvent,
    ExportFinished,
    ExportProgress,
    ExportRequest,
    ExportResult,
    ExportStarted,
    ExportWarning,
    export_run,
    run_export,
)
from zoodesk.export.study import (
    StudyMetadata,
    load_last_study_metadata,
    load_study_metadata,
    save_last_study_metadata,
    study_from_dict,
)
from zoodesk.export.template import template_text, write_template

__all__ = [
    "ExportEvent",
    "ExportFinished",
    "ExportProgress",
    "ExportRequest",
    "ExportResult",
    "ExportStarted",
    "ExportWarning",
    "Problem",
    "StudyMetadata",
    "check_package",
    "export_run",
    "load_last_study_metadata",
    "load_study_metadata",
    "run_export",
    "save_last_study_metadata",
    "study_from_dict",
    "template_text",
    "write_template",
]
