"""Where the packages come from: the layer folders install under the ``quiver`` namespace.

The repository keeps one folder per layer at its top (``superfile/``, ``supertable/``,
``catalog/``, ``flight_server/``, ``proto/``); installed, they are ``quiver.superfile`` and
so on, so that nothing Quiver installs takes a top-level name another distribution uses
(proto-plus installs ``proto``). Everything else is declared in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

LAYERS = ("superfile", "supertable", "catalog", "flight_server", "proto")

packages = ["quiver"]
package_dir = {"quiver": "quiver"}
for layer in LAYERS:
    package_dir[f"quiver.{layer}"] = layer
    packages.append(f"quiver.{layer}")
    packages += [f"quiver.{layer}.{sub}" for sub in find_packages(layer)]

setup(packages=packages, package_dir=package_dir)
