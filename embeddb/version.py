"""The version of embeddb (a leaf, so any module can stamp it without importing the package)."""

__version__ = "0.1.0"
