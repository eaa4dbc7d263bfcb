"""The ``seqstream`` command: a thin front over ``stream``, ``training`` and the local stack.

The root API is tiny on purpose; the online side lives in :mod:`stream`, the offline side in
:mod:`training`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
