"""The study metadata template that ``zoodesk export --template FILE`` writes.

A YAML file with every field the export uses, empty, and a comment saying what each
one is for and where it ends up (REMBI/MIFA YAML, BioStudies PageTab, Zenodo).  The
user fills it in and passes it back with ``zoodesk export --metadata FILE``.
"""

from __future__ import annotations

from pathlib import Path

from zoodesk.errors import ZooDeskError
from zoodesk.export.study import DEFAULT_LICENSE
from zoodesk.fileutils import atomic_write_text

_TEMPLATE = """\
# Study metadata for a ZooDesk deposition package.
#
# Fill in what you know and leave the rest empty; then run
#   zoodesk export RUN_DIR --to EXPORT_DIR --metadata THIS_FILE
# The values go into metadata/rembi_mifa.yaml (REMBI study, biosample, specimen,
# acquisition), metadata/submission.pagetab.tsv (BioImage Archive / BioStudies) and
# metadata/zenodo.json (Zenodo).  Image dimensions, pixel sizes, channel names and
# the microscope recorded in the images, and everything about the model and the run,
# are filled in automatically: do not repeat them here.

# Study title, as it should appear in the archive (one line).
title: ""

# What was imaged and why; what the model-generated results show.
description: ""

# Authors, in order.  ORCID iD as 0000-0000-0000-0000; affiliation is the
# organisation's name; role is optional (e.g. submitter, data curator).
authors:
  - name: ""
    orcid: ""
    affiliation: ""
    email: ""
    role: ""

# Licence of the deposited data: an SPDX identifier.  The BioImage Archive accepts
# CC0-1.0 and CC-BY-4.0.
license: {license}

# Keywords (one per line, e.g. "- nuclei").
keywords: []

# Grants that funded the work.
funding:
  - funder: ""
    grant_id: ""

# Further REMBI study fields, as "name: value" lines (optional), e.g.
#   study_type: cell biology
study: {{}}

# REMBI biosample: what was imaged.
biosample:
  organism:
    # e.g. Homo sapiens / human / NCBITaxon_9606
    scientific_name: ""
    common_name: ""
    ncbi_taxon: ""
  # The biological entity imaged, e.g. "HeLa cells", "mouse liver tissue".
  biological_entity: ""
  description: ""
  # Variables that differ between the images: intrinsic (e.g. genotype),
  # extrinsic (e.g. drug treatment), experimental (e.g. time point).
  intrinsic_variables: ""
  extrinsic_variables: ""
  experimental_variables: ""

# REMBI specimen: how the sample was prepared.
specimen:
  # Sample preparation protocol (fixation, staining, mounting, ...).
  preparation: ""
  growth_protocol: ""
  # Signal/contrast mechanism, e.g. fluorescence, brightfield.
  signal_contrast_mechanism: ""
  # What each channel shows, e.g. "DAPI: nuclei".
  channel_content: ""

# REMBI image acquisition: what the image files do not record.
acquisition:
  # e.g. "confocal microscopy" (an FBbi term if you know it).
  imaging_method: ""
  # Microscope and camera, if the images do not name them.
  instrument: ""
  # Acquisition parameters (exposure, laser power, ...).
  parameters: ""
"""


def template_text(license: str = DEFAULT_LICENSE) -> str:
    """The commented study metadata template, as YAML text."""
    return _TEMPLATE.format(license=license)


def write_template(path: Path, *, overwrite: bool = False) -> Path:
    """Write the template to ``path`` (atomically).

    Raises
    ------
    ZooDeskError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ZooDeskError(f"{path}: already exists (use --overwrite to replace it)")
    try:
        atomic_write_text(path, template_text())
    except OSError as exc:
        raise ZooDeskError(f"{path}: cannot write the template ({exc.strerror})") from exc
    return path
