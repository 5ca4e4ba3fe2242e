"""Draw the ZooDesk application icon and write it as PNG, ICO and ICNS.

The icon is a field of view (a light disc on a teal rounded square) holding a few
segmented nuclei.  It is drawn once at 1024 px with supersampling and scaled down,
so every size comes from the same artwork.  The outputs are committed in
``resources/icons``; run this script again only when the artwork changes::

    .venv/bin/python tools/make_icons.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

MASTER = 1024
#: Pixel sizes stored in the Windows .ico (the shell picks the nearest one).
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
#: The PNG used by Linux desktop files and by the application window.
PNG_SIZE = 256

BACKGROUND_TOP = (18, 74, 104)
BACKGROUND_BOTTOM = (28, 138, 150)
FIELD = (236, 246, 246)
FIELD_RIM = (255, 255, 255)
NUCLEUS = (233, 161, 40)
NUCLEUS_EDGE = (150, 70, 20)

# Nuclei as (centre x, centre y, radius x, radius y) in master pixels.
_NUCLEI = (
    (420, 400, 120, 100),
    (640, 470, 95, 110),
    (470, 650, 105, 85),
    (660, 700, 60, 55),
    (330, 560, 55, 60),
)


def draw_master(size: int = MASTER) -> Image.Image:
    """The icon artwork as an RGBA image of ``size`` x ``size`` pixels.

    Parameters
    ----------
    size
        Edge length in pixels; the drawing is made at four times this size and
        reduced, which smooths the edges without an anti-aliasing drawing library.

    Returns
    -------
    PIL.Image.Image
        The artwork with a transparent margin around the rounded square.
    """
    scale = 4
    big = size * scale
    unit = big / MASTER

    gradient = Image.new("RGBA", (big, big))
    top, bottom = BACKGROUND_TOP, BACKGROUND_BOTTOM
    pixels = ImageDraw.Draw(gradient)
    for y in range(big):
        t = y / (big - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        pixels.line([(0, y), (big, y)], fill=(*colour, 255))

    mask = Image.new("L", (big, big), 0)
    margin = 64 * unit
    ImageDraw.Draw(mask).rounded_rectangle(
        (margin, margin, big - margin, big - margin), radius=200 * unit, fill=255
    )
    art = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    art.paste(gradient, (0, 0), mask)

    draw = ImageDraw.Draw(art)
    rim = 26 * unit
    field = (200 * unit, 200 * unit, big - 200 * unit, big - 200 * unit)
    draw.ellipse(field, fill=FIELD, outline=FIELD_RIM, width=round(rim))
    for cx, cy, rx, ry in _NUCLEI:
        box = ((cx - rx) * unit, (cy - ry) * unit, (cx + rx) * unit, (cy + ry) * unit)
        draw.ellipse(box, fill=NUCLEUS, outline=NUCLEUS_EDGE, width=round(14 * unit))
    return art.resize((size, size), Image.Resampling.LANCZOS)


def write_icons(folder: Path) -> list[Path]:
    """Write ``zoodesk.png``, ``zoodesk.ico`` and ``zoodesk.icns`` into ``folder``.

    Parameters
    ----------
    folder
        Destination folder, created if missing.

    Returns
    -------
    list of Path
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    master = draw_master()
    png = folder / "zoodesk.png"
    master.resize((PNG_SIZE, PNG_SIZE), Image.Resampling.LANCZOS).save(png, optimize=True)
    ico = folder / "zoodesk.ico"
    master.resize((256, 256), Image.Resampling.LANCZOS).save(ico, sizes=[(s, s) for s in ICO_SIZES])
    icns = folder / "zoodesk.icns"
    # The .icns writer stores every size up to 1024 px (512 px at 2x); give it the
    # master so the largest entry is drawn, not enlarged.
    master.save(icns)
    return [png, ico, icns]


def main() -> None:
    """Command line: write the icons into ``resources/icons`` (or ``--output``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "resources" / "icons",
        help="folder to write the icons into (default: resources/icons)",
    )
    args = parser.parse_args()
    for path in write_icons(args.output):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
