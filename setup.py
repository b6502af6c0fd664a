"""Build hook: ship the top-level `pipelines/` and `prompts/` folders inside the wheel as package data.

They stay at the repository's top level (the layout names them there); `build_py` copies them into
`uniedit_synth/_data/`, where uniedit_synth/core/bundled.py finds them with importlib.resources.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("pipelines", "prompts")


class BuildWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders directly
        root = Path(__file__).resolve().parent
        for folder in DATA_FOLDERS:
            target = Path(self.build_lib) / "uniedit_synth" / "_data" / folder
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / folder, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithData})
