"""Hive's command line. Kept import-free: `hive authorized-keys` runs on every ssh login."""

__version__ = "0.1.0"
