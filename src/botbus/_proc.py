"""Child-process helpers shared by the supervisor and the embedded broker."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that SIGTERMs the child when its parent dies (Linux).

    Covers the parent being SIGKILLed or crashing, where no ``finally``
    runs: the child must not live on as an orphan holding a port or a
    durable consumer. libc is loaded here, in the parent, so that between
    fork and exec the child only makes one system call (loading a library
    after fork in a threaded process can deadlock). ``None`` elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, sigterm)

    return hook
