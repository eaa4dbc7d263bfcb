"""seqstream's online side: the network, the artifact loader, and the Faust worker.

Nothing here imports Lightning or ``training``: the worker needs torch, faust, redis and
prometheus_client only.
"""

__all__: list[str] = []
