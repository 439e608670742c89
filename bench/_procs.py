"""Child processes for the benchmarks that run the system as separate processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

STOP_GRACE = 15.0  # seconds before SIGKILL


async def spawn(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """Start ``argv`` with its output appended to ``log``."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*argv, env=env, stdout=out, stderr=out)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
