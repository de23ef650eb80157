"""nestos-installer: install NestOS to disk and edit its live media."""

__version__ = "0.1.0"
