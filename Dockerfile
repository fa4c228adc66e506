# linkd is pure Python: one stage, the package and its runtime dependencies only.
# Settings come from LINKD_* variables (each `linkd serve` flag has one; see `linkd serve --print-config`).
FROM python:3.11-slim
# openssl: compose's one-shot linkd-init service makes the listeners' certificate with it (deploy/linkd-init.sh).
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*
# A fixed unprivileged uid: the data volume's ownership survives image rebuilds.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/linkd --no-create-home --shell /usr/sbin/nologin linkd \
    && mkdir -p /var/lib/linkd /etc/linkd/tls \
    && chown linkd:linkd /var/lib/linkd /etc/linkd/tls
WORKDIR /opt/linkd
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY linkd ./linkd
COPY deploy ./deploy
RUN pip install --no-cache-dir . && chmod 0755 deploy/linkd-init.sh
USER linkd:linkd
VOLUME /var/lib/linkd
# The admin API listens on the container's loopback only: reach it with `docker compose exec linkd linkd ...`.
# To publish it, bind it wider together with --admin-basic-auth-file or --admin-tls-ca (see the operator guide).
ENV LINKD_DATA_DIR=/var/lib/linkd \
    LINKD_LISTENER=0.0.0.0:9092 \
    LINKD_ADMIN=127.0.0.1:8090 \
    LINKD_LOG_FORMAT=json
EXPOSE 9092
# /health answers 200 once the Kafka listener is bound and the links are loaded, 503 before (no credentials needed).
# With --admin-tls-cert the probe must use https:// (and trust that certificate).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8090/health', timeout=4).status == 200 else 1)"]
# SIGTERM drains and flushes; linkd logs "stopped cleanly" when it is done.
STOPSIGNAL SIGTERM
ENTRYPOINT ["linkd"]
CMD ["serve"]
