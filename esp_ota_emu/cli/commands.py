"""The command modules: importing one registers its commands on the ``cli`` group."""

from __future__ import annotations

import importlib

MODULES = (
    "diff",
    "fleet",
    "idf_release",
    "image_info",
    "info",
    "lifecycle",
    "mkflash",
    "mkimage",
    "ota",
    "partitions_cmd",
    "powercut",
    "qemu",
    "scenario",
    "security",
    "serve",
)


def load_all() -> None:
    """Import every command module (for ``--help`` and for names that are not a module's)."""
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}")
