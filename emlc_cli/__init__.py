"""emlc: clean noisy labels with Enhanced Meta Label Correction."""
__version__ = "0.1.0"
