"""The fleet report: per-device outcomes, download-time percentiles, throughput, the server's status
codes, memory per device, and a one-line summary."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .lifecycle import OTA_FAILED, OUTCOMES, DeviceOutcome

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile of sorted values, interpolating linearly between the closest ranks."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * p / 100
    low, high = math.floor(pos), math.ceil(pos)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def distribution(values: list[float]) -> dict[str, float] | None:
    """min, p50, p90, p95, p99, max and mean of the values (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    stats = {"min": ordered[0]}
    stats.update({f"p{p}": percentile(ordered, p) for p in PERCENTILES})
    stats["max"] = ordered[-1]
    stats["mean"] = sum(ordered) / len(ordered)
    return {k: round(v, 6) for k, v in stats.items()}


@dataclass
class FleetReport:
    """Everything a fleet run measured. ``memory`` is filled by the runner (peak memory in flight)."""

    url: str
    devices: list[DeviceOutcome]
    wall_s: float
    concurrency: int
    t0: float = 0.0  # time.monotonic() at the start of the run (device times are reported relative to it)
    timing: dict | None = None
    memory: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for d in self.devices if d.outcome == outcome)

    @property
    def outcomes(self) -> dict[str, int]:
        counts = Counter(d.outcome for d in self.devices)
        return {name: counts[name] for name in OUTCOMES if counts[name]}

    @property
    def errors(self) -> dict[str, int]:
        """ESP-IDF error names of the failed OTAs, most frequent first."""
        return dict(Counter(d.esp_err for d in self.devices if d.esp_err).most_common())

    @property
    def http_status(self) -> dict[str, int]:
        """Every HTTP status code the devices received (one per response), by code."""
        counts = Counter(s for d in self.devices for s in d.http_status)
        return {str(code): counts[code] for code in sorted(counts)}

    @property
    def booted(self) -> list[dict[str, Any]]:
        """What the fleet boots now: slot, version and how many devices."""
        counts = Counter((d.booted, d.version) for d in self.devices)
        return [
            {"slot": slot, "version": version, "devices": n}
            for (slot, version), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ]

    @property
    def bytes_downloaded(self) -> int:
        return sum(d.bytes_written for d in self.devices)

    def throughput(self) -> dict[str, Any]:
        rates = [d.bytes_written / d.download_s for d in self.devices if d.download_s and d.bytes_written]
        wall = max(self.wall_s, 1e-9)
        return {
            "bytes": self.bytes_downloaded,
            "bytes_per_s": round(self.bytes_downloaded / wall, 1),
            "devices_per_s": round(len(self.devices) / wall, 3),
            "per_device_bytes_per_s": distribution(rates),
        }

    def download_s(self) -> dict[str, float] | None:
        return distribution([d.download_s for d in self.devices if d.download_s is not None])

    def summary(self) -> str:
        """One line: how many devices ended how, the failures by ESP-IDF error, download times, rates."""
        n = len(self.devices)
        parts = [f"{n} device{'s' if n != 1 else ''} in {self.wall_s:.1f} s"]
        outcome_words = []
        for name, count in self.outcomes.items():
            words = name.replace("_", " ")
            if name == OTA_FAILED and self.errors:
                words += " (" + ", ".join(f"{e} {c}" for e, c in self.errors.items()) + ")"
            outcome_words.append(f"{count} {words}")
        parts.append(", ".join(outcome_words))
        now = ", ".join(
            f"{b['devices']} on {b['slot'] or 'nothing'}" + (f" {b['version']}" if b["version"] else "")
            for b in self.booted
        )
        parts.append(f"boot: {now}")
        download = self.download_s()
        if download is not None:
            parts.append(f"download p50 {download['p50']:.2f} s, p90 {download['p90']:.2f} s, p99 {download['p99']:.2f} s")
        tp = self.throughput()
        parts.append(f"{tp['bytes_per_s'] / 1e6:.2f} MB/s, {tp['devices_per_s']:.1f} devices/s")
        if self.http_status:
            parts.append("HTTP " + " ".join(f"{code}x{count}" for code, count in self.http_status.items()))
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "url": self.url,
            "devices": len(self.devices),
            "concurrency": self.concurrency,
            "wall_s": round(self.wall_s, 6),
            "outcomes": self.outcomes,
            "booted": self.booted,
            "errors": self.errors,
            "http_status": self.http_status,
            "download_s": self.download_s(),
            "throughput": self.throughput(),
            "memory": self.memory,
            "timing_model": self.timing,
            "device_results": [d.to_json(self.t0) for d in self.devices],
        }
