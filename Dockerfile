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

CMD ["panicbutton", "server"]
