"""A botbus service written outside botbus: ``/weather CITY``."""
