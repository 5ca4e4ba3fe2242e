"""PyInstaller hook for imagecodecs.

imagecodecs loads each codec's extension module on first use
(``importlib.import_module`` behind a module ``__getattr__``), so the import graph
sees none of them.  Collecting all 60 codecs would add about 80 MB of libraries;
ZooDesk needs those that tifffile uses for TIFF compression schemes plus the PNG,
JPEG and BMP decoders of ``zoodesk.images.readers``.  A codec left out is reported
by imagecodecs as not available, and reading a file that needs it fails with a
message naming the codec.
"""

from __future__ import annotations

from PyInstaller import isolated
from PyInstaller.utils.hooks import copy_metadata

#: Codec functions that tifffile and ZooDesk's readers call (without _encode/_decode).
NEEDED_CODECS = (
    # TIFF compression and predictors (tifffile.CompressionCodec, PredictorCodec)
    "zlib",
    "deflate",
    "lzma",
    "zstd",
    "lzw",
    "packbits",
    "delta",
    "floatpred",
    "bitorder",
    "packints",
    "float24",
    "jpeg",
    "jpeg8",
    "ljpeg",
    "jpegsof3",
    "jpeg2k",
    "jpegxl",
    "jpegxr",
    "jpegls",
    "lerc",
    "webp",
    "png",
    "ccittrle",
    "ccittfax3",
    "ccittfax4",
    "eer",
    # other formats read by zoodesk.images.readers
    "bmp",
)


@isolated.decorate
def _extension_modules(codecs: tuple[str, ...]) -> list[str]:
    """Names of the extension modules that hold the given codecs' functions."""
    from imagecodecs import imagecodecs as impl

    modules = set()
    for codec in codecs:
        for suffix in ("_decode", "_encode"):
            name = impl._ALIASES.get(codec + suffix, codec + suffix)
            module = impl._ATTRIBUTES.get(name)
            if module:
                modules.add(module)
    return sorted(modules)


# The extension modules import their shared Cython helpers at run time, which a
# scan of Python bytecode cannot see either.
hiddenimports = ["imagecodecs._shared", "imagecodecs._shared_cython", "imagecodecs._imcd"] + [
    f"imagecodecs.{m}" for m in _extension_modules(NEEDED_CODECS)
]
datas = copy_metadata("imagecodecs")
