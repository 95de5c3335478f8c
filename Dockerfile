# The panicbutton server: MQTT ingest, paging by SMS, HTTP API.
# Settings come from PANICBUTTON_* environment variables (see docs/install/server.md);
# docker-compose.yml runs it with Mosquitto and PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs: the work tree's .venv and caches stay out.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY panicbutton ./panicbutton
COPY device ./device
COPY server ./server
RUN pip install '.[server]' && rm -rf /build
# What room units install beside the wheels (provision.sh, firstboot.sh, ...): an
# installed package has no checkout around it, so the server finds them here, for
# `panicbutton provision`, `panicbutton wheelhouse build` and the console's SD-card files.
COPY firmware_config /usr/share/panicbutton/firmware_config
ENV PANICBUTTON_FIRMWARE_DIR=/usr/share/panicbutton/firmware_config

# A user without a login and without root: the server needs no privilege.
RUN groupadd --system --gid 10001 panicbutton \
 && useradd --system --uid 10001 --gid panicbutton --home-dir /var/lib/panicbutton \
    --create-home --shell /usr/sbin/nologin panicbutton
USER panicbutton
WORKDIR /var/lib/panicbutton

# Inside a container the server must listen beyond loopback to be reached
# through a published port; publish it to the host's loopback only and put a
# TLS proxy in front (see docker-compose.yml).
ENV PANICBUTTON_HTTP_HOST=0.0.0.0 \
    PANICBUTTON_HTTP_PORT=8080
EXPOSE 8080

# Liveness: GET /healthz, open by design (it says only "ok"); readiness and the figures
# need a token (docs/install/server.md, Monitoring).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PANICBUTTON_HTTP_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["panicbutton", "server"]
