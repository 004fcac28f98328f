# The connector as a container: `connector` is the entrypoint, `sync` the default command.
#   docker build -t connector .
#   docker run --rm --env-file connector.env -v connector-state:/var/lib/connector connector
#   docker run --rm -it --env-file connector.env -v connector-state:/var/lib/connector \
#       connector auth login visma
# Settings and secrets come from the environment (deploy/connector.env.example), never from
# the image. See deploy/README.md.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN python -m venv /opt/connector \
    && /opt/connector/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.12-slim
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid connector --home-dir /var/lib/connector \
        --shell /usr/sbin/nologin connector \
    && mkdir -p /var/lib/connector /etc/connector \
    && chown connector:connector /var/lib/connector \
    && chmod 0700 /var/lib/connector
COPY --from=build /opt/connector /opt/connector
# The mapping files shipped with the connector; mount your own over this folder.
COPY mappings /etc/connector/mappings
ENV PATH=/opt/connector/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONNECTOR_STATE_DIR=/var/lib/connector \
    CONNECTOR_MAPPINGS_DIR=/etc/connector/mappings \
    CONNECTOR_LOG_FORMAT=json
# The state database, lock and token files: keep it on a volume and back it up.
VOLUME ["/var/lib/connector"]
WORKDIR /var/lib/connector
USER 10001:10001
ENTRYPOINT ["connector"]
CMD ["sync"]
