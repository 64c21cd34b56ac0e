"""Packaging: the repository's top-level folders install under one namespace.

The repository keeps ``daq/``, ``stream/``, ``decoder/`` and ``display/`` at the top, as our
users asked; installed, they are ``cortexcast.daq``, ``cortexcast.stream``,
``cortexcast.decoder`` and ``cortexcast.display`` (setuptools' ``package_dir`` mapping), so a
wheel holds exactly one top-level package, ``cortexcast``. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("daq", "stream", "decoder", "display")

packages = find_packages(include=["cortexcast", "cortexcast.*"])
package_dir = {"cortexcast": "cortexcast"}
for folder in FOLDERS:
    package_dir[f"cortexcast.{folder}"] = folder
    packages += [f"cortexcast.{p}" for p in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages, package_dir=package_dir)
