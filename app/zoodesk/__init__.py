"""ZooDesk: run BioImage Model Zoo models offline on folders of microscopy images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
