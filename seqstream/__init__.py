"""The ``seqstream`` command: a thin front over ``stream``, ``training`` and the local stack.

The root API is tiny on purpose; the online side lives in :mod:`stream`, the offline side in
:mod:`training`.
"""

from importlib.metadata import version

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__``: the installed distribution's (pyproject.toml), looked up when asked, so
    that importing a command from a checkout that was never installed still works."""
    if name == "__version__":
        return version("seqstream")
    raise AttributeError(f"module 'seqstream' has no attribute {name!r}")
