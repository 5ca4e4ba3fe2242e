"""The built-in demo model and sample images.

They ship inside the package (``zoodesk/resources/demo``, written by
``tools/build_demo.py``) so that ``zoodesk demo`` runs the whole prediction flow on a
fresh installation with no network and no model cache:

- ``model/``: a bioimage.io package, "ZooDesk demo blob detector", a fixed
  difference-of-Gaussians filter for bright round spots (ONNX weights);
- ``samples/``: small synthetic fluorescence images (two OME-TIFFs with pixel sizes
  and one plain TIFF) whose sizes are not multiples of the model's size step.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from zoodesk.errors import ZooDeskError

#: The demo model's description file name inside :func:`demo_model_dir`.
DEMO_DESCRIPTION_NAME = "bioimageio.yaml"
#: File name patterns of the sample images in :func:`demo_images_dir`.
DEMO_IMAGE_PATTERNS = ("*.tif", "*.tiff")


def _demo_root() -> Path:
    root = resources.files("zoodesk") / "resources" / "demo"
    # A regular installation and a PyInstaller bundle both expose the package data as
    # real files; only a zipped import would not, and Path(__file__) is the fallback.
    if isinstance(root, Path):
        return root
    return Path(__file__).resolve().parent / "resources" / "demo"


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise ZooDeskError(
            f"{path}: the demo {what} is missing from this installation (reinstall ZooDesk)"
        )
    return path


def demo_model_dir() -> Path:
    """The folder of the built-in demo model package.

    Raises
    ------
    ZooDeskError
        If the installation lacks the demo resources.
    """
    return _existing(_demo_root() / "model", "model")


def demo_model_path() -> Path:
    """The description file (``bioimageio.yaml``) of the built-in demo model.

    It can be passed to :func:`zoodesk.models.package.load_model_package`.

    Raises
    ------
    ZooDeskError
        If the installation lacks the demo resources.
    """
    return _existing(_demo_root() / "model" / DEMO_DESCRIPTION_NAME, "model")


def demo_images_dir() -> Path:
    """The folder of the built-in sample images (read-only: write results elsewhere).

    Raises
    ------
    ZooDeskError
        If the installation lacks the demo resources.
    """
    return _existing(_demo_root() / "samples", "sample images")


def demo_image_paths() -> list[Path]:
    """The built-in sample images, sorted by name.

    Raises
    ------
    ZooDeskError
        If the installation lacks the demo resources or they hold no image.
    """
    folder = demo_images_dir()
    images = sorted({p for pattern in DEMO_IMAGE_PATTERNS for p in folder.glob(pattern)})
    if not images:
        raise ZooDeskError(f"{folder}: no demo sample images in this installation")
    return images
