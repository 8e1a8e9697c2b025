"""Build step of the package (metadata lives in setup.cfg): the wheel carries the shipped
device cards and experiments.

The repository keeps them in its top-level folders ``device_models/`` and ``experiments/``
(where users and the docs expect them).  Building a wheel copies both, side by side, into
``crossbar_ep/_shipped/`` of the build tree, so an installed package finds them by name
(:mod:`crossbar_ep.shipped`) and the relative paths inside them resolve as in the repository.
An editable install copies nothing: the package then reads the repository's folders.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = ("device_models", "experiments")
SUFFIXES = (".yaml", ".md")


class BuildPyWithShippedData(build_py):
    """build_py that also copies device_models/ and experiments/ into the package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder in SHIPPED:
            src_root = os.path.join(HERE, folder)
            if not os.path.isdir(src_root):
                raise SystemExit(f"setup.py: {src_root} is missing; build from a complete "
                                 f"checkout or sdist")
            for dirpath, dirnames, files in os.walk(src_root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
                rel = os.path.relpath(dirpath, HERE)
                target = os.path.join(self.build_lib, "crossbar_ep", "_shipped", rel)
                for name in sorted(files):
                    if name.endswith(SUFFIXES):
                        self.mkpath(target)
                        self.copy_file(os.path.join(dirpath, name), os.path.join(target, name))


setup(cmdclass={"build_py": BuildPyWithShippedData})
