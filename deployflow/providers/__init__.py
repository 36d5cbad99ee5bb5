"""Backends behind small Protocols: one module per backend, one factory (``factory.py``)."""
