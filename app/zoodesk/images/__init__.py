"""Image input and output: readers, OME-TIFF writers and discovery of input files."""

from zoodesk.images._ome import PROVENANCE_NAMESPACE
from zoodesk.images.discovery import (
    IMAGE_SUFFIXES,
    SkippedFolder,
    find_images,
    image_suffix,
    natural_key,
    output_stem,
    read_list_file,
)
from zoodesk.images.readers import (
    MAX_DECODED_BYTES,
    MAX_GUESSED_CHANNELS,
    ImageData,
    available_memory,
    channel_indices,
    fold_colour_samples,
    guess_axes,
    read_image,
    release_mapped_pages,
    series_names,
)
from zoodesk.images.writers import (
    LOSSLESS_COMPRESSIONS,
    TiledOmeTiffWriter,
    build_ome_xml,
    write_ome_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LOSSLESS_COMPRESSIONS",
    "MAX_DECODED_BYTES",
    "MAX_GUESSED_CHANNELS",
    "PROVENANCE_NAMESPACE",
    "ImageData",
    "SkippedFolder",
    "TiledOmeTiffWriter",
    "available_memory",
    "build_ome_xml",
    "channel_indices",
    "find_images",
    "fold_colour_samples",
    "guess_axes",
    "image_suffix",
    "natural_key",
    "output_stem",
    "read_image",
    "read_list_file",
    "release_mapped_pages",
    "series_names",
    "write_ome_tiff",
]
