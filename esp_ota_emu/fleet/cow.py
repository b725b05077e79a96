"""Copy-on-write device flashes: many devices cloned from one template flash.

Every device maps a private copy of the template with :class:`~esp_ota_emu.flash.Flash`'s
``copy_on_write`` mode. Reads share the template's pages; the first erase or program of a 4 KiB
sector gives that device its own copy of the page. A device therefore holds only the sectors it
wrote (an OTA of 1 MB: about 256 sectors plus otadata), not the whole flash, and its flash is still
one contiguous buffer, so image verification reads it through zero-copy views as it reads a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..device import sidecar_path
from ..errors import InputError
from ..flash import SECTOR_SIZE, Flash

_CHUNK = 1 << 20


class FlashTemplate:
    """The flash every device starts from: a frozen private copy of the given file (and its sidecar).

    The copy keeps the run independent of the original file, which may change or go away meanwhile.
    """

    def __init__(self, path: str | os.PathLike):
        source = Path(path)
        if not source.is_file():
            raise InputError(f"template flash {source} is not a file")
        self._dir = tempfile.TemporaryDirectory(prefix="esp-ota-emu-fleet-")
        self.path = Path(self._dir.name) / source.name
        try:
            shutil.copyfile(source, self.path)
            if sidecar_path(source).is_file():
                shutil.copyfile(sidecar_path(source), sidecar_path(self.path))
        except OSError as err:
            self._dir.cleanup()
            raise InputError(f"cannot read template flash {source}: {err.strerror}") from None
        self.size = self.path.stat().st_size
        if self.size == 0:
            self._dir.cleanup()
            raise InputError(f"template flash {source} is empty")

    def clone(self, *, strict: bool = False) -> Flash:
        """A new device flash: the template's bytes, private pages only where this device writes."""
        return Flash(self.path, strict=strict, copy_on_write=True)

    def open_for_setup(self) -> Flash:
        """The template itself, writable: only before the first clone (clones must see one fixed template)."""
        return Flash(self.path)

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> FlashTemplate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def written_sectors(flash: Flash) -> int:
    """How many 4 KiB sectors this flash erased or programmed (the sectors a clone holds privately)."""
    return sum(1 for e, p in zip(flash.erase_count, flash.program_count) if e or p)


def private_bytes(flash: Flash) -> int:
    """Bytes a clone stores of its own: its written sectors."""
    return written_sectors(flash) * SECTOR_SIZE


def save_flash(flash: Flash, path: str | os.PathLike) -> Path:
    """Write a device's whole flash to a normal file (streamed; via a temporary file beside it)."""
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "wb") as f:
            for addr in range(0, flash.size, _CHUNK):
                f.write(flash.view(addr, min(_CHUNK, flash.size - addr)))
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {err.strerror}") from None
    return out
