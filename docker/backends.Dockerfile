# Demo backends (tests/backends/*.py, aiohttp) for docker/compose.yaml and scripts/docker-test.sh.
#   docker build -f docker/backends.Dockerfile -t estuary-demo-backends:latest .
#   docker run --rm estuary-demo-backends users.py --host 0.0.0.0 --port 8081
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-aiohttp \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-log-init --uid 10002 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin backend
COPY tests/backends/demo.py tests/backends/users.py tests/backends/orders.py /srv/backends/
WORKDIR /srv/backends
USER 10002:10002
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/bin/python3", "-u"]
CMD ["users.py", "--host", "0.0.0.0", "--port", "8081"]
