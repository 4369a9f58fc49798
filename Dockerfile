# One image for every role; the command picks it:
#   docker run IMAGE processor MODULE:APP    (or router, worker, topics create, ...)
# Configuration comes from the environment: KAFKA_BOOTSTRAP_SERVERS,
# PROCESSION_* (docs/operations.md) and the standard OTEL_* variables.
# The wheels are built outside the image, so the build needs no package index:
#   pip wheel -w wheels ".[kafka,rdkafka,otel]" && docker build -t procession .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/procession/bin:$PATH

COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/procession \
 && /opt/procession/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        "procession[kafka,rdkafka,otel]" \
 && rm -rf /tmp/wheels \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin procession

# Not root. SIGTERM stops the components gracefully: open transactions are
# finished or aborted, then the process exits 0.
USER 10001
ENTRYPOINT ["procession"]
CMD ["--help"]
