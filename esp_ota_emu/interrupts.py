"""Ctrl-C and the writes that decide what boots.

A device can lose power between any two flash operations, and the power-cut tools model exactly that.
A user who presses Ctrl-C should not get the same damage: the few multi-operation writes that decide
what boots run with SIGINT held back until they are done. They are an otadata sector's erase and
program, a partition copy (esp_partition_copy, a v5.5 update's final copy), and a first boot's
security writes (the Secure Boot V1 digest, flash encryption in place) with the sidecar that records
the eFuses they burned. A single flash operation is never torn by Ctrl-C: Python raises
KeyboardInterrupt between operations, not inside one.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run the block with Ctrl-C (SIGINT) held back, then deliver it as the handler before would have.

    Signals reach only the main thread, so elsewhere (the fleet's device threads) the block just runs,
    as it does when SIGINT's handler was not set from Python (there is none to restore).
    """
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:
        yield
        return
    received: list[tuple] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])
        elif received and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)
