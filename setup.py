"""Packaging: the repository's top-level folders install under one namespace.

The repository keeps ``daq/``, ``stream/``, ``decoder/`` and ``display/`` at the top, as our
users asked; installed, they are ``cortexcast.daq``, ``cortexcast.stream``,
``cortexcast.decoder`` and ``cortexcast.display`` (setuptools' ``package_dir`` mapping), so a
wheel holds exactly one top-level package, ``cortexcast``. Everything else is in pyproject.toml.

``cortexcast/daq`` etc. are symbolic links to those folders, so that tools which walk a
package's folder (``lint-imports`` from the repository root, grimp) see the installed layout;
packaging ignores them and uses the mapping (a checkout without symlinks, e.g. on Windows,
installs the same).
"""

from setuptools import find_packages, setup

FOLDERS = ("daq", "stream", "decoder", "display")

packages = find_packages(include=["cortexcast", "cortexcast.*"],
                         exclude=[f"cortexcast.{f}{s}" for f in FOLDERS for s in ("", ".*")])
package_dir = {"cortexcast": "cortexcast"}
for folder in FOLDERS:
    package_dir[f"cortexcast.{folder}"] = folder
    packages += [f"cortexcast.{p}" for p in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages, package_dir=package_dir)
