"""``python -m botbus.gateway``: the same as ``botbus gateway``."""

from __future__ import annotations

from botbus.gateway.cli import gateway

if __name__ == "__main__":
    gateway()
