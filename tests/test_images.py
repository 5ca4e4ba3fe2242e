"""Image readers, OME-TIFF writers and input discovery, on real files made here."""

from __future__ import annotations

import json
import re
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imageio.v3 as iio
import numpy as np
import psutil
import pytest
import tifffile

from tests.unprivileged import run_unprivileged, unreadable
from zoodesk.errors import ImageReadError
from zoodesk.images import (
    IMAGE_SUFFIXES,
    PROVENANCE_NAMESPACE,
    ImageData,
    TiledOmeTiffWriter,
    find_images,
    guess_axes,
    output_stem,
    read_image,
    read_list_file,
    write_ome_tiff,
)

if TYPE_CHECKING:
    from zoodesk.images import SkippedFolder

OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or ".part" in p.name)


def _ome_xml(path: Path) -> str:
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages.first.description
    assert xml.startswith("<?xml")
    return xml


# --- readers: formats -----------------------------------------------------------------


def test_plain_2d_tiff(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 65535, (48, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", pixels)
    image = read_image(tmp_path / "plain.tif")
    assert isinstance(image, ImageData)
    assert image.axes == "YX"
    assert image.shape == (48, 64)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image.array, pixels)
    assert image.pixel_sizes == {}
    assert image.channel_names is None
    assert image.path == tmp_path / "plain.tif"


@pytest.mark.parametrize(("pages", "axes"), [(3, "CYX"), (12, "ZYX")])
def test_multipage_tiff_without_metadata_guesses_axes(
    tmp_path: Path, rng: np.random.Generator, pages: int, axes: str
) -> None:
    stack = rng.integers(0, 255, (pages, 20, 24), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "stack.tif") as writer:
        for plane in stack:
            writer.write(plane, photometric="minisblack", metadata=None)
    image = read_image(tmp_path / "stack.tif")
    assert image.axes == axes
    np.testing.assert_array_equal(image.array, stack)


def test_imagej_hyperstack_axes_and_calibration(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = rng.integers(0, 4095, (2, 3, 2, 16, 20), dtype=np.uint16)  # TZCYX
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "micron", "finterval": 30},
    )
    image = read_image(tmp_path / "hyper.tif")
    assert image.axes == "TZCYX"
    np.testing.assert_array_equal(image.array, stack)
    assert image.pixel_sizes == {"X": (0.25, "µm"), "Y": (0.25, "µm"), "Z": (1.5, "µm")}
    assert image.metadata["format"] == "imagej-tiff"
    assert image.metadata["time_increment"] == (30.0, "s")


def test_ome_tiff_physical_sizes_and_channel_names(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    stack = rng.integers(0, 65535, (3, 4, 16, 16), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        stack,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.65,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.7,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 250,
            "PhysicalSizeZUnit": "nm",
            "Channel": {"Name": ["DAPI", "GFP", "mCherry"]},
        },
    )
    image = read_image(tmp_path / "cells.ome.tif")
    assert image.axes == "CZYX"
    np.testing.assert_array_equal(image.array, stack)
    assert image.pixel_sizes == {"X": (0.65, "µm"), "Y": (0.7, "µm"), "Z": (250.0, "nm")}
    assert image.channel_names == ["DAPI", "GFP", "mCherry"]
    assert image.metadata["format"] == "ome-tiff"


def test_multi_series_ome_tiff_reads_the_requested_series(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    first = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    second = rng.random((5, 8, 12), dtype=np.float32)
    with tifffile.TiffWriter(tmp_path / "two.ome.tif", ome=True) as writer:
        writer.write(first, metadata={"axes": "YX", "Name": "overview"})
        writer.write(
            second,
            metadata={"axes": "ZYX", "Name": "detail", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1},
        )
    image = read_image(tmp_path / "two.ome.tif", series=1)
    assert image.series == 1
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.array, second)
    assert image.pixel_sizes == {"X": (0.1, "µm"), "Y": (0.1, "µm")}
    assert image.metadata["image_name"] == "detail"
    np.testing.assert_array_equal(read_image(tmp_path / "two.ome.tif").array, first)
    with pytest.raises(ImageReadError, match=r"two\.ome\.tif: series 2 does not exist"):
        read_image(tmp_path / "two.ome.tif", series=2)


def test_pyramid_reads_full_resolution(tmp_path: Path, rng: np.random.Generator) -> None:
    full = rng.integers(0, 65535, (128, 96), dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif", ome=True) as writer:
        writer.write(full, subifds=2, tile=(32, 32), metadata={"axes": "YX"})
        writer.write(full[::2, ::2], subfiletype=1, tile=(32, 32))
        writer.write(full[::4, ::4], subfiletype=1, tile=(32, 32))
    image = read_image(tmp_path / "pyramid.ome.tif")
    assert image.shape == (128, 96)
    np.testing.assert_array_equal(image.array, full)
    assert image.metadata["pyramid_levels"] == 3


def test_ome_acquisition_metadata(tmp_path: Path) -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Instrument ID="Instrument:0">'
        '<Microscope Manufacturer="Zeiss" Model="Axio Observer" Type="Inverted"/>'
        '<Objective ID="Objective:0" Model="Plan-Apochromat" NominalMagnification="63" '
        'LensNA="1.4" Immersion="Oil"/>'
        "</Instrument>"
        '<Image ID="Image:0" Name="field1">'
        "<AcquisitionDate>2024-03-01T10:20:30</AcquisitionDate>"
        '<InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0"/>'
        '<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" SizeX="8" SizeY="6" '
        'SizeZ="1" SizeC="1" SizeT="1" PhysicalSizeX="0.1" PhysicalSizeY="0.1">'
        '<Channel ID="Channel:0:0" Name="Hoechst" SamplesPerPixel="1" '
        'EmissionWavelength="461"/>'
        '<TiffData IFD="0" PlaneCount="1"/></Pixels></Image></OME>'
    )
    tifffile.imwrite(
        tmp_path / "acq.ome.tif", np.zeros((6, 8), np.uint8), description=xml, metadata=None
    )
    image = read_image(tmp_path / "acq.ome.tif")
    assert image.pixel_sizes == {"X": (0.1, "µm"), "Y": (0.1, "µm")}
    assert image.channel_names == ["Hoechst"]
    meta = image.metadata
    assert meta["acquisition_date"] == "2024-03-01T10:20:30"
    assert meta["microscope"] == {
        "manufacturer": "Zeiss",
        "model": "Axio Observer",
        "type": "Inverted",
    }
    assert meta["objective"] == {
        "model": "Plan-Apochromat",
        "immersion": "Oil",
        "nominal_magnification": 63.0,
        "lens_na": 1.4,
    }
    assert meta["channels"][0]["emission_wavelength"] == (461.0, "nm")


def test_tiff_resolution_tags_give_pixel_sizes(tmp_path: Path) -> None:
    # 40000 pixels per centimetre are 0.25 µm pixels.
    tifffile.imwrite(
        tmp_path / "cm.tif",
        np.zeros((8, 8), np.uint8),
        resolution=(40000, 20000),
        resolutionunit="CENTIMETER",
    )
    assert read_image(tmp_path / "cm.tif").pixel_sizes == {"X": (0.25, "µm"), "Y": (0.5, "µm")}
    # 72 dpi is an image editor's default, not a calibration.
    tifffile.imwrite(
        tmp_path / "dpi.tif", np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH"
    )
    assert read_image(tmp_path / "dpi.tif").pixel_sizes == {}


def test_png_rgb_grey_and_16_bit(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    image = read_image(tmp_path / "rgb.png")
    assert image.axes == "YXS"
    np.testing.assert_array_equal(image.array, rgb)
    assert image.pixel_sizes == {}

    grey16 = rng.integers(0, 65535, (20, 30), dtype=np.uint16)
    iio.imwrite(tmp_path / "grey16.png", grey16)
    image = read_image(tmp_path / "grey16.png")
    assert image.axes == "YX"
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image.array, grey16)


def test_jpeg_and_bmp(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 250, 64).astype(np.uint8), (48, 1))
    rgb = np.stack([gradient, gradient[::-1], np.full_like(gradient, 128)], axis=-1)
    iio.imwrite(tmp_path / "photo.jpg", rgb, quality=95)
    image = read_image(tmp_path / "photo.jpg")
    assert image.axes == "YXS"
    assert image.shape == (48, 64, 3)
    # JPEG is lossy: close, not equal.
    assert np.abs(image.array.astype(int) - rgb.astype(int)).mean() < 3

    iio.imwrite(tmp_path / "grey.bmp", gradient)
    image = read_image(tmp_path / "grey.bmp")
    assert image.axes == "YX"
    np.testing.assert_array_equal(image.array, gradient)


def test_npy_is_memory_mapped(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = rng.random((2, 24, 32), dtype=np.float32)
    np.save(tmp_path / "probs.npy", stack)
    image = read_image(tmp_path / "probs.npy")
    assert isinstance(image.array, np.memmap)
    assert image.axes == "CYX"
    np.testing.assert_array_equal(image.array, stack)


def test_content_decides_the_format_not_the_name(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 255, (10, 12), dtype=np.uint8)
    iio.imwrite(tmp_path / "real.png", pixels)
    (tmp_path / "named.jpg").write_bytes((tmp_path / "real.png").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "named.jpg").array, pixels)


def test_large_uncompressed_tiff_is_not_loaded_at_open(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    # tifffile writes the header and leaves the 512 MiB of pixels as a sparse hole.
    tifffile.imwrite(path, shape=(16384, 16384), dtype=np.uint16)
    process = psutil.Process()
    before = process.memory_info().rss
    image = read_image(path)
    corner = np.asarray(image.array[:16, :16])
    grown = process.memory_info().rss - before
    assert isinstance(image.array, np.memmap)
    assert image.shape == (16384, 16384)
    assert image.metadata["memory_mapped"] is True
    assert corner.sum() == 0
    assert grown < 64 * 2**20


def test_uncompressed_ome_tiff_round_trip_is_memory_mapped(tmp_path: Path) -> None:
    stack = np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 3, 8, 8)
    write_ome_tiff(tmp_path / "raw.ome.tif", stack, "CZYX", compression=None)
    image = read_image(tmp_path / "raw.ome.tif")
    assert isinstance(image.array, np.memmap)
    np.testing.assert_array_equal(image.array, stack)


def test_big_endian_tiff_is_memory_mapped_with_its_byte_order(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    pixels = rng.integers(0, 65535, (16, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "motorola.tif", pixels, byteorder=">")
    image = read_image(tmp_path / "motorola.tif")
    assert isinstance(image.array, np.memmap)
    assert image.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(image.array, pixels)
    # Written back, the data are stored in native order and read back equal.
    write_ome_tiff(tmp_path / "native.ome.tif", image.array, image.axes)
    np.testing.assert_array_equal(read_image(tmp_path / "native.ome.tif").array, pixels)


# --- readers: axes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "axes"),
    [
        ((512, 512), np.uint16, "YX"),
        ((512, 512, 3), np.uint8, "YXS"),
        ((512, 512, 4), np.uint8, "YXS"),
        ((512, 512, 3), np.uint16, "ZYX"),
        ((3, 512, 512), np.uint8, "CYX"),
        ((4, 512, 512), np.float32, "CYX"),
        ((5, 512, 512), np.uint16, "ZYX"),
        ((2, 40, 512, 512), np.uint16, "CZYX"),
        ((40, 2, 512, 512), np.uint16, "ZCYX"),
        ((10, 40, 512, 512), np.uint16, "TZYX"),
        ((10, 2, 30, 64, 64), np.uint16, "TCZYX"),
        ((30, 64, 64, 3), np.uint8, "ZYXS"),
    ],
)
def test_guess_axes(shape: tuple[int, ...], dtype: type, axes: str) -> None:
    assert guess_axes(shape, dtype) == axes


def test_guess_axes_refuses_what_it_cannot_name() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        guess_axes((10,), np.uint8)
    with pytest.raises(ValueError, match="too many dimensions"):
        guess_axes((9, 9, 9, 9, 9, 8, 8), np.uint8)


def test_explicit_axes_override_and_validation(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.zeros((3, 8, 8), np.uint8))
    assert read_image(tmp_path / "t.npy").axes == "CYX"
    assert read_image(tmp_path / "t.npy", axes="tyx").axes == "TYX"
    with pytest.raises(ImageReadError, match=r"t\.npy: axes 'YX' do not fit .*\(3, 8, 8\)"):
        read_image(tmp_path / "t.npy", axes="YX")
    with pytest.raises(ImageReadError, match="not among"):
        read_image(tmp_path / "t.npy", axes="QYX")
    with pytest.raises(ImageReadError, match="repeated"):
        read_image(tmp_path / "t.npy", axes="YYX")


# --- readers: bad input -----------------------------------------------------------------


def _tiff_bytes(tmp_path: Path, data: np.ndarray, **kwargs: object) -> bytes:
    scratch = tmp_path / "scratch.tif"
    tifffile.imwrite(scratch, data, **kwargs)  # type: ignore[arg-type]
    content = scratch.read_bytes()
    scratch.unlink()
    return content


def _absurd_dimensions(tmp_path: Path) -> bytes:
    content = bytearray(_tiff_bytes(tmp_path, np.zeros((16, 16), np.uint8)))
    scratch = tmp_path / "scratch.tif"
    scratch.write_bytes(content)
    with tifffile.TiffFile(scratch) as tif:
        tags = tif.pages.first.tags
        targets = [(tags["ImageWidth"].valueoffset, tags["ImageWidth"].dtype),
                   (tags["ImageLength"].valueoffset, tags["ImageLength"].dtype)]  # fmt: skip
    scratch.unlink()
    for offset, dtype in targets:
        fmt = "<I" if dtype == 4 else "<H"
        content[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, 60000)
    return bytes(content)


def _corrupt_zlib(tmp_path: Path) -> bytes:
    pixels = np.random.default_rng(5).integers(0, 4000, (64, 64), dtype=np.uint16)
    content = bytearray(_tiff_bytes(tmp_path, pixels, compression="zlib", tile=(32, 32)))
    scratch = tmp_path / "scratch.tif"
    scratch.write_bytes(content)
    with tifffile.TiffFile(scratch) as tif:
        offset = tif.pages.first.dataoffsets[1]
        count = tif.pages.first.databytecounts[1]
    scratch.unlink()
    content[offset : offset + count] = b"\x55" * count
    return bytes(content)


def _png_bytes(data: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", data, extension=".png")


def _jpeg_bytes(data: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", data, extension=".jpg")


def _bmp_bytes(data: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", data, extension=".bmp")


def _npy_bytes(tmp_path: Path, data: np.ndarray) -> bytes:
    np.save(tmp_path / "scratch.npy", data, allow_pickle=True)
    content = (tmp_path / "scratch.npy").read_bytes()
    (tmp_path / "scratch.npy").unlink()
    return content


def _half(content: bytes) -> bytes:
    return content[: len(content) // 2]


_NOISE = np.random.default_rng(7).integers(0, 255, (128, 128, 3), dtype=np.uint8)


def _png_claiming(width: int, height: int) -> bytes:
    content = bytearray(_png_bytes(_NOISE))
    content[16:24] = struct.pack(">II", width, height)
    return bytes(content)


BAD_FILES = {
    "text.tif": lambda tmp: b"this is a text file, not an image",
    "text.png": lambda tmp: b"hello",
    "header_only.tif": lambda tmp: b"II*\x00\x08\x00",
    "truncated.tif": lambda tmp: _half(_tiff_bytes(tmp, _NOISE[..., 0])),
    "truncated_stack.tif": lambda tmp: _tiff_bytes(tmp, np.stack([_NOISE[..., 0]] * 6))[:60000],
    "truncated_zlib.tif": lambda tmp: _half(
        _tiff_bytes(tmp, _NOISE[..., 0], compression="zlib", tile=(32, 32))
    ),
    "truncated_zlib_stack.tif": lambda tmp: _tiff_bytes(
        tmp, np.stack([_NOISE[..., 0]] * 6), compression="zlib"
    )[:60000],
    "corrupt_zlib.tif": _corrupt_zlib,
    "absurd.tif": _absurd_dimensions,
    "truncated.npy": lambda tmp: _half(_npy_bytes(tmp, _NOISE)),
    "objects.npy": lambda tmp: _npy_bytes(tmp, np.array([{"a": 1}], dtype=object)),
    "complex.npy": lambda tmp: _npy_bytes(tmp, np.zeros((4, 4), np.complex64)),
    "vector.npy": lambda tmp: _npy_bytes(tmp, np.zeros(16, np.float32)),
    "truncated.png": lambda tmp: _half(_png_bytes(_NOISE)),
    "absurd.png": lambda tmp: _png_claiming(100_000, 100_000),
    "inflated.png": lambda tmp: _png_claiming(20_000, 20_000),
    "truncated.jpg": lambda tmp: _half(_jpeg_bytes(_NOISE)),
    "truncated.bmp": lambda tmp: _half(_bmp_bytes(_NOISE)),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name](tmp_path))
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b""), "file is empty"),
    ],
)
def test_missing_folder_and_empty_inputs(tmp_path: Path, setup: object, problem: str) -> None:
    path = tmp_path / "input.tif"
    setup(path)  # type: ignore[operator]
    with pytest.raises(ImageReadError, match=f"^{re.escape(str(path))}: {problem}"):
        read_image(path)


@pytest.mark.parametrize(
    "name",
    [
        "header_only.tif",
        "truncated.tif",
        "truncated_stack.tif",
        "truncated_zlib.tif",
        "truncated_zlib_stack.tif",
        "truncated.npy",
        "truncated.png",
        "truncated.jpg",
        "truncated.bmp",
        "inflated.png",
    ],
)
def test_truncated_files_are_named_as_such(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name](tmp_path))
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(path)


def test_corrupt_compressed_data_and_absurd_sizes(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    path.write_bytes(_corrupt_zlib(tmp_path))
    with pytest.raises(ImageReadError, match="corrupt TIFF pixel data"):
        read_image(path)
    path = tmp_path / "absurd.tif"
    path.write_bytes(_absurd_dimensions(tmp_path))
    with pytest.raises(ImageReadError, match=r"declares 3\.4 GiB"):
        read_image(path)


# --- writers ------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = rng.integers(0, 65535, (3, 2, 40, 50), dtype=np.uint16)
    provenance = {"model_id": "affable-shark", "weights_sha256": "ab" * 32, "note": "a < b & c"}
    path = tmp_path / "out" / "result.ome.tif"
    write_ome_tiff(
        path,
        stack,
        "ZCYX",
        pixel_sizes={"X": (0.5, "um"), "Y": (0.5, "µm"), "Z": (2, "micron")},
        channel_names=["nuclei", "membranes"],
        provenance=provenance,
        description="segmentation",
    )
    image = read_image(path)
    assert image.axes == "ZCYX"
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image.array, stack)
    assert image.pixel_sizes == {"X": (0.5, "µm"), "Y": (0.5, "µm"), "Z": (2.0, "µm")}
    assert image.channel_names == ["nuclei", "membranes"]
    assert image.metadata["provenance"] == provenance
    assert image.metadata["description"] == "segmentation"

    # The provenance is an OME MapAnnotation attached to the image.
    root = ET.fromstring(_ome_xml(path))
    annotation = root.find(f"{OME}StructuredAnnotations/{OME}MapAnnotation")
    assert annotation is not None
    assert annotation.get("Namespace") == PROVENANCE_NAMESPACE
    pairs = {m.get("K"): m.text for m in annotation.iter(f"{OME}M")}
    assert pairs == provenance
    ref = root.find(f"{OME}Image/{OME}AnnotationRef")
    assert ref is not None and ref.get("ID") == annotation.get("ID")
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize(
    ("dtype", "stored"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int32, np.int32),
        (np.uint8, np.uint8),
        (np.int8, np.int8),
        (np.float16, np.float32),
        (np.int64, np.uint32),
        (np.bool_, np.uint8),
    ],
)
def test_pixel_types(tmp_path: Path, rng: np.random.Generator, dtype: type, stored: type) -> None:
    values: np.ndarray = rng.integers(0, 100, (2, 16, 16)).astype(dtype)
    write_ome_tiff(tmp_path / "typed.ome.tif", values, "CYX")
    image = read_image(tmp_path / "typed.ome.tif")
    assert image.dtype == np.dtype(stored)
    np.testing.assert_array_equal(image.array, values.astype(stored))


def test_int64_values_beyond_32_bits_are_refused(tmp_path: Path) -> None:
    values = np.array([[0, 2**40]], dtype=np.int64)
    with pytest.raises(ValueError, match="32-bit"):
        write_ome_tiff(tmp_path / "big.ome.tif", values, "YX")
    assert list(tmp_path.iterdir()) == []


def test_rgb_and_channels_last_layouts(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 255, (2, 20, 30, 3), dtype=np.uint8)
    write_ome_tiff(tmp_path / "rgb.ome.tif", rgb, "TYXS")
    image = read_image(tmp_path / "rgb.ome.tif")
    assert image.axes == "TYXS"
    np.testing.assert_array_equal(image.array, rgb)

    # Y and X are stored last: a channels-last array comes back channels-first.
    channels_last = rng.random((20, 30, 2), dtype=np.float32)
    write_ome_tiff(tmp_path / "yxc.ome.tif", channels_last, "YXC", channel_names=["a", "b"])
    image = read_image(tmp_path / "yxc.ome.tif")
    assert image.axes == "CYX"
    np.testing.assert_array_equal(image.array, np.moveaxis(channels_last, -1, 0))
    assert image.channel_names == ["a", "b"]


# TIFF Compression tag values: 1 none, 8 Adobe deflate (zlib), 50000 zstd.
@pytest.mark.parametrize(
    ("compression", "code", "tile"),
    [("zlib", 8, None), (None, 1, None), ("zstd", 50000, (16, 32)), (None, 1, (16, 16))],
)
def test_compression_and_tiles(
    tmp_path: Path,
    rng: np.random.Generator,
    compression: str | None,
    code: int,
    tile: tuple[int, int] | None,
) -> None:
    stack = rng.integers(0, 1000, (3, 40, 50), dtype=np.uint16)
    path = tmp_path / "c.ome.tif"
    write_ome_tiff(path, stack, "TYX", compression=compression, tile=tile)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.compression == code
        assert page.is_tiled == (tile is not None)
        assert len(tif.pages) == 3
    np.testing.assert_array_equal(read_image(path).array, stack)


def test_bigtiff_past_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoodesk.images import writers

    write_ome_tiff(tmp_path / "small.ome.tif", np.ones((8, 8), np.uint8), "YX")
    monkeypatch.setattr(writers, "BIGTIFF_THRESHOLD", 32)
    write_ome_tiff(tmp_path / "big.ome.tif", np.ones((8, 8), np.uint8), "YX")
    with tifffile.TiffFile(tmp_path / "small.ome.tif") as small:
        assert not small.is_bigtiff
    with tifffile.TiffFile(tmp_path / "big.ome.tif") as big:
        assert big.is_bigtiff
    np.testing.assert_array_equal(read_image(tmp_path / "big.ome.tif").array, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"axes": "ZCYX"}, "4 letters for shape"),
        ({"axes": "QYX"}, "distinct letters"),
        ({"axes": "CZT"}, "lack Y or X"),
        ({"channel_names": ["a"]}, "1 channel names for 2 channel"),
        ({"pixel_sizes": {"X": (1.0, "parsec-ish")}}, "not a length unit"),
        ({"pixel_sizes": {"X": (-1.0, "µm")}}, "positive"),
        ({"pixel_sizes": {"T": (1.0, "s")}}, "only X, Y and Z"),
        ({"compression": "jpeg"}, "lossless"),
        ({"tile": (10, 10)}, "multiples of 16"),
    ],
)
def test_write_refuses_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    arguments: dict = {"axes": "CYX", **kwargs}
    with pytest.raises(ValueError, match=match):
        write_ome_tiff(tmp_path / "x.ome.tif", np.zeros((2, 16, 16), np.uint8), **arguments)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "result.ome.tif"
    final.write_bytes(b"previous result")
    real_write = tifffile.TiffWriter.write

    def write_then_fail(self: tifffile.TiffWriter, *args: object, **kwargs: object) -> None:
        real_write(self, *args, **kwargs)  # type: ignore[arg-type]
        self._fh.flush()
        # The pixels are in a temporary file; the final name still holds the old file.
        temporary = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert len(temporary) == 1 and temporary[0].stat().st_size > 4 * 32 * 32 * 2
        assert final.read_bytes() == b"previous result"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_ome_tiff(final, np.ones((4, 32, 32), np.uint16), "ZYX", compression=None)
    assert final.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []

    fresh = tmp_path / "fresh.ome.tif"
    with pytest.raises(OSError):
        write_ome_tiff(fresh, np.ones((4, 32, 32), np.uint16), "ZYX", compression=None)
    assert not fresh.exists()
    assert _leftovers(tmp_path) == []


def test_failure_in_the_pixel_source_mid_write(tmp_path: Path) -> None:
    class FailingPlanes(np.ndarray):
        """An array whose third plane cannot be read (like a failing disk)."""

        def __getitem__(self, index: Any) -> Any:
            if index == (2,):
                raise OSError(5, "Input/output error")
            return np.asarray(self)[index]

    source = np.ones((4, 32, 32), np.uint16).view(FailingPlanes)
    final = tmp_path / "partial.ome.tif"
    with pytest.raises(OSError, match="Input/output"):
        write_ome_tiff(final, source, "ZYX")
    assert not final.exists()
    assert _leftovers(tmp_path) == []


def test_ome_xml_is_valid_against_the_schema(tmp_path: Path, rng: np.random.Generator) -> None:
    xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is not installed")
    ome_types = pytest.importorskip(
        "ome_types", reason="ome-types (which ships the OME 2016-06 schema) is not installed"
    )
    xsd = Path(ome_types.__file__).parent / "ome-2016-06.xsd"
    if not xsd.is_file():
        pytest.skip(f"the OME schema is not where ome-types used to ship it: {xsd}")
    # allow="local": the schema imports xml.xsd by URL; xmlschema has a local copy and
    # nothing may be fetched from the network.
    schema = xmlschema.XMLSchema(str(xsd), allow="local")
    cases: list[tuple[str, np.ndarray, str, dict[str, Any]]] = [
        ("plain.ome.tif", rng.random((16, 16), dtype=np.float32), "YX", {}),
        (
            "full.ome.tif",
            rng.integers(0, 255, (2, 3, 2, 16, 16), dtype=np.uint8),
            "TZCYX",
            {
                "pixel_sizes": {"X": (0.2, "µm"), "Y": (0.2, "µm"), "Z": (1e-6, "m")},
                "channel_names": ["a", "b"],
                "provenance": {"model": "m", "bad\x00chars": "ok\x07"},
                "description": "text with <markup> & ünïcode",
            },
        ),
        (
            "rgb.ome.tif",
            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
            "YXS",
            {"tile": (16, 16)},
        ),
    ]
    for name, data, axes, kwargs in cases:
        write_ome_tiff(tmp_path / name, data, axes, **kwargs)
        schema.validate(_ome_xml(tmp_path / name))


def test_tiled_writer_accepts_blocks_in_any_order(tmp_path: Path, rng: np.random.Generator) -> None:
    full = rng.random((2, 100, 70), dtype=np.float32)
    path = tmp_path / "tiled.ome.tif"
    with TiledOmeTiffWriter(
        path,
        full.shape,
        np.float32,
        "CYX",
        pixel_sizes={"X": (0.3, "µm"), "Y": (0.3, "µm")},
        channel_names=["fg", "bg"],
        provenance={"run": "r1"},
        tile=(32, 32),
    ) as writer:
        for y0 in (64, 0, 96, 32):
            writer.write_block((slice(None), slice(y0, y0 + 32)), full[:, y0 : y0 + 32])
        assert not path.exists()  # nothing under the final name before close
    image = read_image(path)
    np.testing.assert_array_equal(image.array, full)
    assert image.axes == "CYX"
    assert image.pixel_sizes == {"X": (0.3, "µm"), "Y": (0.3, "µm")}
    assert image.channel_names == ["fg", "bg"]
    assert image.metadata["provenance"] == {"run": "r1"}
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled
        assert (tif.pages.first.tilelength, tif.pages.first.tilewidth) == (32, 32)
    assert _leftovers(tmp_path) == []


def test_tiled_writer_discards_everything_on_error(tmp_path: Path) -> None:
    path = tmp_path / "never.ome.tif"
    with (
        pytest.raises(RuntimeError, match="model failed"),
        TiledOmeTiffWriter(path, (64, 64), np.uint16, "YX", tile=(16, 16)) as writer,
    ):
        writer.write_block((slice(0, 16), slice(0, 16)), 7)
        assert _leftovers(tmp_path) != []  # the scratch file exists meanwhile
        raise RuntimeError("model failed")
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_tiled_writer_validates_before_any_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channel"):
        TiledOmeTiffWriter(tmp_path / "x.ome.tif", (2, 8, 8), np.uint8, "CYX", channel_names=["a"])
    assert list(tmp_path.iterdir()) == []


# --- discovery ------------------------------------------------------------------------------


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_find_images_in_a_folder(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "img10.tif",
        "img2.TIF",
        "img1.ome.tiff",
        "a.npy",
        "b.PNG",
        "c.jpeg",
        "d.jpg",
        "e.bmp",
        "notes.txt",
        ".hidden.tif",
        ".img3.tif.abc123.ome.tif.part",
        "sub/deep.tif",
    )
    found = find_images([tmp_path])
    assert [p.name for p in found] == [
        "a.npy",
        "b.PNG",
        "c.jpeg",
        "d.jpg",
        "e.bmp",
        "img1.ome.tiff",
        "img2.TIF",
        "img10.tif",
    ]
    assert all(p.parent == tmp_path for p in found)


def test_find_images_recursive_and_patterns(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "raw_1.tif",
        "raw_2.tif",
        "mask_1.tif",
        "day2/raw_3.tif",
        "day10/raw_4.tif",
        "day2/mask_3.tif",
        ".cache/raw_5.tif",
    )
    assert [
        p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path], recursive=True)
    ] == [
        "day2/mask_3.tif",
        "day2/raw_3.tif",
        "day10/raw_4.tif",
        "mask_1.tif",
        "raw_1.tif",
        "raw_2.tif",
    ]
    assert [p.name for p in find_images([tmp_path], patterns=["RAW_*"])] == [
        "raw_1.tif",
        "raw_2.tif",
    ]
    assert [
        p.relative_to(tmp_path).as_posix()
        for p in find_images([tmp_path], patterns=["day2/*", "*_4.tif"], recursive=True)
    ] == ["day2/mask_3.tif", "day2/raw_3.tif", "day10/raw_4.tif"]


def test_find_images_keeps_direct_files_and_removes_duplicates(tmp_path: Path) -> None:
    _touch(tmp_path, "b.tif", "a.tif", "readme.md")
    found = find_images([tmp_path / "readme.md", tmp_path, tmp_path / "b.tif", tmp_path / "b.tif"])
    assert found == [tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "readme.md"]
    with pytest.raises(ImageReadError, match="nope: no such file or folder"):
        find_images([tmp_path / "nope"])


def _link(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:  # Windows without the right to create links
        pytest.skip(f"cannot create a symbolic link here: {exc}")


def test_links_to_folders_are_reported_not_followed(tmp_path: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    _touch(data, "top.tif", "real/deep.tif")
    _touch(other, "far.tif")
    _link(data / "link", other)
    _link(data / "real" / "loop", data)  # a loop back up the tree
    skipped: list[SkippedFolder] = []
    found = find_images([data], recursive=True, skipped=skipped)
    assert [p.relative_to(data).as_posix() for p in found] == ["real/deep.tif", "top.tif"]
    assert [(s.path, s.reason) for s in skipped] == [
        (
            data / "link",
            f"a link to the folder {other.resolve()}, not followed (give that folder as an "
            "input of its own to process it)",
        ),
        (data / "real" / "loop", f"a link back to {data.resolve()} (a loop), not followed"),
    ]
    assert skipped[1].message.endswith("(a loop), not followed; its images are not processed")
    # Without --recursive sub-folders are not looked into, so nothing is skipped.
    skipped.clear()
    assert [p.name for p in find_images([data], skipped=skipped)] == ["top.tif"]
    assert skipped == []
    # A link given as an input is a folder the user chose: it is read.
    assert [p.name for p in find_images([data / "link"], recursive=True)] == ["far.tif"]


_FIND = """
import json, sys
from pathlib import Path
from zoodesk.images import find_images
skipped = []
found = find_images([Path(sys.argv[1])], recursive=True, skipped=skipped)
print(json.dumps({"found": [str(p) for p in found],
                  "skipped": [[str(s.path), s.reason] for s in skipped]}))
"""


def test_unreadable_folders_are_reported(tmp_path: Path) -> None:
    """A real ``chmod 000`` folder, listed by a process without root's capabilities."""
    data = tmp_path / "data"
    _touch(data, "top.tif", "locked/hidden.tif", "open/seen.tif")
    with unreadable(data / "locked"):
        done = run_unprivileged([sys.executable, "-c", _FIND, str(data)])
        # The top folder itself unreadable: reported too, not an empty folder.
        with unreadable(data):
            top = run_unprivileged([sys.executable, "-c", _FIND, str(data)])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["found"] == [str(data / "open" / "seen.tif"), str(data / "top.tif")]
    assert result["skipped"] == [[str(data / "locked"), "cannot be read (permission denied)"]]
    assert json.loads(top.stdout) == {
        "found": [],
        "skipped": [[str(data), "cannot be read (permission denied)"]],
    }


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("a.ome.tif", "a"),
        ("a.OME.TIFF", "a"),
        ("cells.tif", "cells"),
        ("x.y.npy", "x.y"),
        ("photo.JPEG", "photo"),
        ("archive.tar.gz", "archive.tar"),
        ("plain", "plain"),
    ],
)
def test_output_stem(name: str, stem: str) -> None:
    assert output_stem(Path("some/folder") / name) == stem


def test_image_suffixes_cover_the_readers() -> None:
    assert {
        ".tif",
        ".tiff",
        ".ome.tif",
        ".ome.tiff",
        ".npy",
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".czi",
        ".nd2",
        ".lif",
        ".oib",
        ".oif",
    } == set(IMAGE_SUFFIXES)


def test_read_list_file(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "batch.txt"
    listing.parent.mkdir()
    absolute = tmp_path / "elsewhere" / "z.tif"
    listing.write_text(
        f"\ufeff# images for the March run\na.tif\n\n  sub/b #1.tif  \n../c.tif\n{absolute}\n",
        encoding="utf-8",
    )
    assert read_list_file(listing) == [
        listing.parent / "a.tif",
        listing.parent / "sub" / "b #1.tif",
        listing.parent / ".." / "c.tif",
        absolute,
    ]
    with pytest.raises(ImageReadError, match=r"missing\.txt: list file not found"):
        read_list_file(tmp_path / "missing.txt")


def test_every_suffix_found_is_readable(tmp_path: Path, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    write_ome_tiff(tmp_path / "b.ome.tif", pixels, "YX")
    np.save(tmp_path / "c.npy", pixels)
    iio.imwrite(tmp_path / "d.png", pixels)
    iio.imwrite(tmp_path / "e.bmp", pixels)
    found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.tif", "b.ome.tif", "c.npy", "d.png", "e.bmp"]
    for path in found:
        np.testing.assert_array_equal(read_image(path).array, pixels)


# --- tiled writer: regions, pixel types, memory -----------------------------------------


def test_tiled_writer_regions_in_the_callers_axes(tmp_path: Path, rng: np.random.Generator) -> None:
    full = rng.integers(0, 60000, (40, 56, 3), dtype=np.uint16)
    path = tmp_path / "channels_last.ome.tif"
    with TiledOmeTiffWriter(path, full.shape, np.uint16, "YXC", tile=(16, 16)) as writer:
        writer.write_block((slice(0, 40), slice(0, 30)), full[:, :30])
        # An integer index drops that axis from the data, as numpy assignment does.
        for c in range(3):
            writer.write_block((slice(0, 40), slice(30, 56), c), full[:, 30:, c])
        writer.write_block((slice(10, 12), slice(0, 4), 1), 7)  # a scalar broadcasts
    expected = full.copy()
    expected[10:12, 0:4, 1] = 7
    image = read_image(path)
    assert image.axes == "CYX"
    np.testing.assert_array_equal(image.array, np.moveaxis(expected, -1, 0))


def test_tiled_writer_narrows_64_bit_labels_and_offers_a_memmap(tmp_path: Path) -> None:
    path = tmp_path / "labels.ome.tif"
    with TiledOmeTiffWriter(path, (2, 32, 48), np.int64, "ZYX", tile=(16, 16)) as writer:
        writer.write_block((0,), np.full((32, 48), 70000, np.int64))
        writer.array[1, :16] = 5  # the memory-mapped view writes to the same data
        writer.write_block((1, slice(16, 32)), 3)
    image = read_image(path)
    assert image.dtype == np.uint32
    assert (image.array[0] == 70000).all()
    assert (image.array[1, :16] == 5).all() and (image.array[1, 16:] == 3).all()
    path = tmp_path / "negative.ome.tif"
    with TiledOmeTiffWriter(path, (32, 32), np.int64, "YX", tile=(16, 16)) as writer:
        writer.write_block((slice(0, 16),), -(2**40))
        with pytest.raises(ValueError, match="do not fit the 32-bit integers"):
            writer.close()
    assert not path.exists() and _leftovers(tmp_path) == []


def test_tiled_writer_refuses_regions_it_cannot_store(tmp_path: Path) -> None:
    with TiledOmeTiffWriter(tmp_path / "x.ome.tif", (32, 32), np.float32, "YX") as writer:
        with pytest.raises(ValueError, match="steps are not supported"):
            writer.write_block((slice(0, 32, 2),), 1.0)
        with pytest.raises(ValueError, match="outside an axis of 32"):
            writer.write_block((40,), 1.0)
        with pytest.raises(ValueError, match=r"data of shape \(3, 3\) does not fit"):
            writer.write_block((slice(0, 4), slice(0, 4)), np.zeros((3, 3)))
        writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_tiled_writer_keeps_blocks_out_of_the_process_memory(tmp_path: Path) -> None:
    # 256 MiB written block by block: with a memory map, every page written would
    # stay resident until close; with file writes the process grows by a block.
    process = psutil.Process()
    block = np.ones((1024, 1024), np.float32)
    with TiledOmeTiffWriter(
        tmp_path / "big.ome.tif", (8192, 8192), np.float32, "YX", compression=None
    ) as writer:
        before = process.memory_info().rss
        for y in range(0, 8192, 1024):
            for x in range(0, 8192, 1024):
                writer.write_block((slice(y, y + 1024), slice(x, x + 1024)), block)
        grown = process.memory_info().rss - before
    assert grown < 64 * 2**20, f"the process grew by {grown / 2**20:.0f} MiB"
    with tifffile.TiffFile(tmp_path / "big.ome.tif") as tif:
        assert tif.pages.first.is_tiled
        assert float(tif.pages.first.asarray()[-1, -1]) == 1.0


# --- axes: frames are views, blocks land where assemble_output puts them ---------------


def _axis_tensor(letters: str) -> Any:
    from zoodesk.models.spec import AxisSpec, TensorSpec

    kinds = {"b": "batch", "c": "channel", "z": "space", "y": "space", "x": "space"}
    axes = tuple(
        AxisSpec(id={"b": "batch", "c": "channel"}.get(a, a), kind=kinds[a]) for a in letters
    )
    return TensorSpec(id="t", axes=axes)


def test_frames_of_a_memory_mapped_image_are_views(tmp_path: Path) -> None:
    from zoodesk.images.axes import map_image_to_tensor

    np.save(
        tmp_path / "movie.npy", np.arange(2 * 1 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 1, 3, 8, 8)
    )
    image = read_image(tmp_path / "movie.npy", axes="TZCYX")
    mapping = map_image_to_tensor(image.axes, image.shape, _axis_tensor("bcyx"), channels=[1, 2])
    frames = list(mapping.frames(image.array))
    assert [index for index, _ in frames] == [(0,), (1,)]
    for (t,), frame in frames:
        assert frame.shape == (1, 2, 8, 8)
        assert isinstance(frame, np.memmap) and np.shares_memory(frame, image.array)
        np.testing.assert_array_equal(frame[0], image.array[t, 0, 1:3])


def test_output_placement_matches_assemble_output(rng: np.random.Generator) -> None:
    from zoodesk.images.axes import assemble_output, map_image_to_tensor, output_placement

    tensor = _axis_tensor("bcyx")
    mapping = map_image_to_tensor("ZTYX", (3, 2, 16, 20), tensor)
    frames = [rng.random((1, 2, 16, 20)).astype(np.float32) for _ in range(mapping.frame_count)]
    expected, axes = assemble_output(mapping, tensor, frames)
    placement = output_placement(mapping, tensor, (1, 2, 16, 20))
    assert (placement.axes, placement.shape) == (axes, expected.shape)
    result = np.zeros(placement.shape, np.float32)
    for (index, _), frame in zip(mapping.frames(np.zeros((3, 2, 16, 20))), frames, strict=True):
        for y0, x0 in ((0, 0), (0, 10), (8, 0), (8, 10)):
            dst = (slice(None), slice(None), slice(y0, y0 + 8), slice(x0, x0 + 10))
            region, data = placement.place(index, dst, frame[dst])
            result[region] = data
    np.testing.assert_array_equal(result, expected)
