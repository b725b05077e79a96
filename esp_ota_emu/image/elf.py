"""A minimal reader of 32-bit little-endian ELF executables, as much as elf2image needs.

Reproduces what esptool's ``ELFFile`` takes from an ELF: the entry point, the loadable sections
(PROGBITS and the init/fini arrays with a non-zero address and size, in section-header order),
the PT_LOAD program headers (for ``--use-segments``) and the SHA-256 of the whole file (which
ESP-IDF apps carry in ``esp_app_desc_t.app_elf_sha256``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from construct import Bytes, Const, ConstructError, Int16ul, Int32ul, Struct

from ..errors import InputError

EM_XTENSA = 0x5E
EM_RISCV = 0xF3

SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_NOBITS = 8
SHT_INIT_ARRAY = 14
SHT_FINI_ARRAY = 15
SHT_PREINIT_ARRAY = 16
# Section types whose contents end up in the image.
LOADED_SECTION_TYPES = (SHT_PROGBITS, SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY)

PT_LOAD = 1

Elf32Header = Struct(
    "ident" / Const(b"\x7fELF"),
    "ident_rest" / Bytes(12),
    "type" / Int16ul,
    "machine" / Int16ul,
    "version" / Int32ul,
    "entry" / Int32ul,
    "phoff" / Int32ul,
    "shoff" / Int32ul,
    "flags" / Int32ul,
    "ehsize" / Int16ul,
    "phentsize" / Int16ul,
    "phnum" / Int16ul,
    "shentsize" / Int16ul,
    "shnum" / Int16ul,
    "shstrndx" / Int16ul,
)

Elf32SectionHeader = Struct(
    "name" / Int32ul,
    "type" / Int32ul,
    "flags" / Int32ul,
    "addr" / Int32ul,
    "offset" / Int32ul,
    "size" / Int32ul,
    "link" / Int32ul,
    "info" / Int32ul,
    "addralign" / Int32ul,
    "entsize" / Int32ul,
)

Elf32ProgramHeader = Struct(
    "type" / Int32ul,
    "offset" / Int32ul,
    "vaddr" / Int32ul,
    "paddr" / Int32ul,
    "filesz" / Int32ul,
    "memsz" / Int32ul,
    "flags" / Int32ul,
    "align" / Int32ul,
)


@dataclass
class ElfSection:
    """A loadable piece of the ELF: a section, or a PT_LOAD segment (named ``PHDR``)."""

    name: str
    addr: int
    data: memoryview
    align: int


class ElfFile:
    """An ELF executable for an Xtensa or RISC-V ESP chip, read from memory."""

    def __init__(self, data: bytes, name: str = "ELF file"):
        self.data = memoryview(data)
        self.name = name
        if bytes(data[:4]) != b"\x7fELF":
            raise InputError(f"{name} is not an ELF file: it starts with {bytes(data[:4])!r}, not b'\\x7fELF'")
        try:
            header = Elf32Header.parse(data)
        except ConstructError as err:
            raise InputError(f"{name} is not a 32-bit ELF file ({str(err).splitlines()[-1]})") from None
        if header.machine not in (EM_XTENSA, EM_RISCV):
            raise InputError(f"{name} is not an Xtensa or RISC-V ELF (e_machine {header.machine:#06x})")
        if header.shentsize != Elf32SectionHeader.sizeof():
            raise InputError(f"{name} has section headers of {header.shentsize:#x} bytes, not 0x28")
        if header.shnum == 0:
            raise InputError(f"{name} has no section headers")
        if header.shstrndx >= header.shnum:
            raise InputError(f"{name} has no section-name table at index {header.shstrndx}")
        self.entry: int = header.entry
        self.sections = self._read_sections(header)
        self.segments = self._read_program_headers(header)

    @classmethod
    def open(cls, path: str | Path) -> ElfFile:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror}") from None
        return cls(data, path.name)

    def _table(self, struct: Struct, offset: int, count: int, what: str) -> list:
        size = struct.sizeof() * count
        if offset + size > len(self.data):
            raise InputError(f"{self.name}: {what} table at {offset:#x} runs past the end of the file")
        raw = self.data[offset : offset + size]
        return [struct.parse(raw[i : i + struct.sizeof()]) for i in range(0, size, struct.sizeof())]

    def _bytes(self, offset: int, size: int, what: str) -> memoryview:
        if offset + size > len(self.data):
            raise InputError(f"{self.name}: {what} runs past the end of the file")
        return self.data[offset : offset + size]

    def _read_sections(self, header) -> list[ElfSection]:
        table = self._table(Elf32SectionHeader, header.shoff, header.shnum, "section header")
        names_header = table[header.shstrndx]
        names = bytes(self._bytes(names_header.offset, names_header.size, "section-name table"))

        def name_at(offset: int) -> str:
            end = names.find(b"\0", offset)
            if end < 0:
                raise InputError(f"{self.name}: unterminated section name")
            return names[offset:end].decode("utf-8", "replace")

        return [
            ElfSection(
                name_at(sh.name),
                sh.addr,
                self._bytes(sh.offset, sh.size, f"section {name_at(sh.name)}"),
                sh.addralign,
            )
            for sh in table
            if sh.addr != 0 and sh.size != 0 and sh.type in LOADED_SECTION_TYPES
        ]

    def _read_program_headers(self, header) -> list[ElfSection]:
        if header.phnum == 0:
            return []
        table = self._table(Elf32ProgramHeader, header.phoff, header.phnum, "program header")
        return [
            ElfSection("PHDR", ph.paddr, self._bytes(ph.offset, ph.filesz, "segment"), ph.align)
            for ph in table
            if ph.type == PT_LOAD and ph.paddr != 0 and ph.filesz > 0
        ]

    def sha256(self) -> bytes:
        """SHA-256 of the whole ELF file (what ESP-IDF apps store as ``app_elf_sha256``)."""
        return hashlib.sha256(self.data).digest()
