"""Build hook: the wheel carries the bundled problems and skills as `knight/_bundled/`.

`baselines/` and `skills/` stay at the checkout's root (they are documents people read and
edit); this copies them into the built package so `pip install .` works outside the checkout.
An editable install needs no copy: `knight.bundled` finds the checkout's folders directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("baselines", "skills")


class BuildWithBundles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name in BUNDLED:
            shutil.copytree(
                name,
                Path(self.build_lib) / "knight" / "_bundled" / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )


setup(cmdclass={"build_py": BuildWithBundles})
