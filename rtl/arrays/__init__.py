"""Compute engines (PE arrays), one module per dataflow; all implement
:class:`celosia.rtl.arrays.engine.ComputeEngineSignature`."""

from celosia.rtl.config import AccelConfig

__all__ = ["make_engine"]


def make_engine(config: AccelConfig):
    """The compute engine class for ``config.dataflow`` (instantiate with ``config``)."""
    if config.dataflow == "ws":
        from celosia.rtl.arrays.ws import WSArray
        return WSArray
    if config.dataflow == "os":
        from celosia.rtl.arrays.os import OSArray
        return OSArray
    if config.dataflow == "rs":
        from celosia.rtl.arrays.rs import RSArray
        return RSArray
    if config.dataflow == "feie":
        from celosia.rtl.arrays.os import FEIEArray
        return FEIEArray
    raise NotImplementedError(f"dataflow {config.dataflow!r} has no compute engine yet; "
                              f"available: ws, os, rs, feie")
