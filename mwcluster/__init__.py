"""mwcluster: an in-memory metadata master with a write-ahead journal and a checkpoint node."""

__version__ = "0.1.0"

__all__ = ["Client"]


def __getattr__(name: str):
    # The client imports zmq and tenacity; load it on first use so `import mwcluster` stays
    # cheap for the offline tools.
    if name == "Client":
        from mwcluster.client import Client

        return Client
    raise AttributeError(f"module 'mwcluster' has no attribute {name!r}")
