"""Backends behind small Protocols (``base.py``): one module per backend, one registry."""
