"""``python -m botbus.service NAME``: run the installed service NAME (what ``botbus up`` starts)."""

from botbus.service.cli import service

service()
