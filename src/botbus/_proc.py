"""Child-process helpers shared by the supervisor and the embedded broker."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """``preexec_fn``: on Linux, SIGTERM the child when its parent dies.

    Covers the parent being SIGKILLed or crashing, where no ``finally``
    runs: the child must not live on as an orphan holding a port or a
    durable consumer.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
