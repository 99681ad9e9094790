"""Inputs checked before torch is imported: the verified set and its holdout (verified.py), and everything
`emlc clean` checks up front (preflight.py). Docstring only: importing a module here must not pull in torch."""
