"""The device timing model: a slow link and a slow NOR flash, so a server sees real devices' pace.

A real ESP32 takes tens of milliseconds per sector erase and reads the socket only between flash
writes, so an OTA server sees slow, bursty clients. The model delays the emulated device where the
real one spends time, in the device's own thread (so the socket backs up as it would):

* flash: each erase and program costs the datasheet time of the SPI NOR chip commands that ESP-IDF's
  ``esp_flash_erase_region`` / ``esp_flash_write`` issue: a 64 KiB block erase where the range is
  64 KiB-aligned and long enough, otherwise 4 KiB sector erases; one page program per 256-byte page.
  Times are Winbond W25Q32JV's (the 4 MB part of common ESP32 modules), AC characteristics table:
  sector erase 45 ms typical / 400 ms max, 64 KiB block erase 150 / 2000 ms, page program
  0.4 / 3 ms.
* link: a bandwidth limit as a token bucket whose depth is the device's TCP receive window (lwIP's
  default ``CONFIG_LWIP_TCP_WND_DEFAULT`` 5744 bytes: after a pause only that much arrives at once),
  and a round-trip time charged four times per HTTP response (TCP handshake, two TLS 1.2 round trips,
  the request) when its headers arrive.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..errors import InputError
from ..flash import SECTOR_SIZE, FlashOp

BLOCK_ERASE_SIZE = 0x10000  # the generic SPI flash driver's block_erase_size
PAGE_SIZE = 256  # SPI NOR page program size
TCP_WINDOW = 5744  # CONFIG_LWIP_TCP_WND_DEFAULT (4 x the default MSS)
ROUND_TRIPS_PER_REQUEST = 4  # TCP SYN/ACK, TLS 1.2 full handshake (2), request -> response headers
MIN_SLEEP = 0.01  # pace in steps of at least this long (fewer, larger sleeps; same average rate)


@dataclass(frozen=True)
class FlashTiming:
    """Seconds per SPI NOR flash command."""

    sector_erase: float
    block_erase: float
    page_program: float

    def erase_seconds(self, addr: int, length: int) -> float:
        """The commands esp_flash_erase_region issues for this range, and their time."""
        seconds = 0.0
        while length > 0:
            if length >= BLOCK_ERASE_SIZE and addr % BLOCK_ERASE_SIZE == 0:
                seconds += self.block_erase
                addr, length = addr + BLOCK_ERASE_SIZE, length - BLOCK_ERASE_SIZE
            else:
                seconds += self.sector_erase
                addr, length = addr + SECTOR_SIZE, length - SECTOR_SIZE
        return seconds

    def program_seconds(self, addr: int, length: int) -> float:
        """One page program per 256-byte page the write touches."""
        pages = (addr + length - 1) // PAGE_SIZE - addr // PAGE_SIZE + 1
        return pages * self.page_program


FLASH_TIMINGS = {
    "typical": FlashTiming(sector_erase=0.045, block_erase=0.150, page_program=0.0004),
    "max": FlashTiming(sector_erase=0.400, block_erase=2.000, page_program=0.003),
}


@dataclass(frozen=True)
class TimingModel:
    """How slow the emulated devices are. ``None`` fields are not modelled (as fast as the host)."""

    bandwidth: float | None = None  # link bits per second
    rtt: float = 0.0  # link round-trip time, seconds
    flash: FlashTiming | None = None

    @property
    def active(self) -> bool:
        return self.bandwidth is not None or self.rtt > 0 or self.flash is not None

    def to_json(self) -> dict:
        return {
            "bandwidth_bps": self.bandwidth,
            "rtt_s": self.rtt,
            "flash": asdict(self.flash) if self.flash is not None else None,
        }

    def device(self) -> DeviceClock:
        return DeviceClock(self)


class DeviceClock:
    """One device's timing state: the flash hook and the link pacing of the model."""

    def __init__(self, model: TimingModel):
        self.model = model
        self._rate = model.bandwidth / 8 if model.bandwidth else None  # bytes per second
        self._tokens = float(TCP_WINDOW)
        self._last = time.monotonic()
        self._received = 0

    def flash_hook(self, op: FlashOp) -> None:
        """A Flash hook: the operation takes as long as the chip needs."""
        timing = self.model.flash
        if timing is None:
            return
        if op.kind == "erase":
            time.sleep(timing.erase_seconds(op.addr, op.length))
        else:
            time.sleep(timing.program_seconds(op.addr, op.length))

    def response(self) -> None:
        """An HTTP response arrived: the round trips it took before its headers could."""
        if self.model.rtt:
            time.sleep(ROUND_TRIPS_PER_REQUEST * self.model.rtt)
        self._tokens, self._last = float(TCP_WINDOW), time.monotonic()

    def received(self, total: int) -> None:
        """The OTA has consumed ``total`` bytes of body so far: wait until the link could have carried them."""
        n, self._received = total - self._received, total
        if self._rate is None or n <= 0:
            return
        now = time.monotonic()
        self._tokens = min(float(TCP_WINDOW), self._tokens + (now - self._last) * self._rate) - n
        self._last = now
        if self._tokens < -self._rate * MIN_SLEEP:
            time.sleep(-self._tokens / self._rate)


_BANDWIDTH_UNITS = {"": 1, "bit": 1, "bps": 1, "k": 1e3, "kbit": 1e3, "kbps": 1e3, "m": 1e6, "mbit": 1e6, "mbps": 1e6,
                   "g": 1e9, "gbit": 1e9, "gbps": 1e9}


def parse_bandwidth(text: str) -> float:
    """A link speed in bits per second: ``250kbit``, ``1Mbit``, ``2mbps`` or a plain number of bits/s."""
    value = text.strip().lower().replace("/s", "")
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(number):]
    try:
        bits = float(number) * _BANDWIDTH_UNITS[unit]
    except (ValueError, KeyError):
        raise InputError(f"not a bandwidth: {text!r} (use e.g. 250kbit, 1Mbit or 2000000)") from None
    if bits <= 0:
        raise InputError(f"the bandwidth must be positive, not {text!r}")
    return bits
