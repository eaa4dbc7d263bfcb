"""seqstream's online side: the network, the artifact loader, and the Faust worker.

Nothing here imports Lightning or ``training``: the worker needs only the base install
(pyproject.toml's ``dependencies``: torch, faust-streaming, aiokafka, redis, prometheus-client,
safetensors, numpy, orjson, scipy), not the extras' Lightning, matplotlib, River, wfdb or pandas;
tests/test_packaging.py imports every module here and checks.
"""

__all__: list[str] = []
