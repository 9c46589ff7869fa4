"""Maps the root folders `passes/` and `targets/` into the `lepton_compiler` package.

Metadata lives in pyproject.toml; setuptools' pyproject-only package discovery cannot prefix
mapped folders, so the package list and `package_dir` are built here.
"""

from setuptools import find_packages, setup

_MAPPED = {"lepton_compiler.passes": "passes", "lepton_compiler.targets": "targets"}

packages = find_packages(include=["lepton_compiler", "lepton_compiler.*"])
for name, folder in _MAPPED.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"lepton_compiler": "lepton_compiler", **_MAPPED})
