# seqstream: two images from one file (docker-compose.yml builds both).
#   target `worker` (seqstream:latest): the base install, what `worker` and `view` need; no
#     Lightning, matplotlib, River or wfdb (pyproject.toml's extras hold those).
#   target `tools` (seqstream-tools:latest): the worker image plus the `train` extra (which
#     includes `publish`), for `train` and `publish`.
# CPU-only torch: pip's default torch wheel on Linux is a CUDA build (several GB of NVIDIA
# libraries), so torch comes first from PyTorch's CPU wheel index; `pip install .` then finds it
# already satisfied and pulls the rest from PyPI.
FROM python:3.11-slim AS worker

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2"

WORKDIR /src
COPY . .
# The worker-only install, checked: the worker's modules load without any extra.
RUN pip install . && python -c "import stream.worker, stream.security, seqstream.view.server" \
    && python -c "from seqstream.view.server import STATIC; assert STATIC.joinpath('view.js').is_file()" \
    && python -c "from seqstream.stack import KAFKA_POM; assert KAFKA_POM.is_file()" \
    && ! pip show pytorch-lightning matplotlib river wfdb 2>/dev/null | grep -q '^Name:'

# Run as an unprivileged user; /artifacts is the volume the train service writes the model to.
RUN useradd --system --uid 10001 --home-dir /home/seqstream --create-home seqstream \
    && mkdir -p /artifacts && chown seqstream /artifacts
USER seqstream
WORKDIR /home/seqstream
ENV SEQSTREAM_HOME=/home/seqstream/.cache/seqstream \
    SEQSTREAM_METRICS_HOST=0.0.0.0

EXPOSE 8000 8050
ENTRYPOINT ["seqstream"]
CMD ["--help"]

FROM worker AS tools
USER root
RUN pip install "/src[train]" && python -c "import training.cli, seqstream.publish"
USER seqstream
