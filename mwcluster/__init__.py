"""mwcluster: an in-memory metadata master with a write-ahead journal and a checkpoint node."""

__version__ = "0.1.0"
