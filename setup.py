"""setuptools' build, with one addition: wheels carry the user guide.

The desktop application's Help > User guide shows ``docs/gui.md`` (with its
screenshots).  The guide lives in ``docs/`` beside the other documents, outside the
package, so the build copies it into ``zoodesk/resources/docs/`` of the wheel, where
``zoodesk.gui.help_dialogs.user_guide_path`` finds it in an installed copy.
Everything else is declared in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DOCS = Path(__file__).resolve().parent / "docs"


class BuildPyWithGuide(build_py):
    """``build_py`` that also copies the user guide and its screenshots."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "zoodesk" / "resources" / "docs"
        (target / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copy2(DOCS / "gui.md", target / "gui.md")
        for picture in (DOCS / "screenshots").glob("*.png"):
            shutil.copy2(picture, target / "screenshots" / picture.name)


setup(cmdclass={"build_py": BuildPyWithGuide})
