# seqstream: one image for `train`, `worker` and `publish` (docker-compose.yml picks the command).
# CPU-only torch: pip's default torch wheel on Linux is a CUDA build (several GB of NVIDIA
# libraries), so torch comes first from PyTorch's CPU wheel index; `pip install .` then finds it
# already satisfied and pulls the rest from PyPI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2"

WORKDIR /src
COPY . .
RUN pip install . && python -c "import stream.security, seqstream.publish, training.cli" \
    && python -c "from seqstream.view.server import STATIC; assert STATIC.joinpath('view.js').is_file()"

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
