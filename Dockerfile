# One image for every botbus process; the command picks the part:
#   botbus gateway | botbus service <name> | botbus sandbox
# Built in two stages: a wheel of botbus (and of every dependency) first,
# then a slim runtime that installs only those wheels and runs as an
# unprivileged user. No source tree, compiler or pip cache in the result.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY services ./services
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BOTBUS_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home botbus \
    && mkdir -p /data && chown botbus:botbus /data
COPY --from=build /wheels /tmp/wheels
# The search service indexes docs/kb, which it looks for beside the installed
# `services` package (services/search/service.py: BUNDLED_KB).
COPY docs/kb /tmp/kb
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels botbus \
    && site="$(python -c 'import pathlib, services; print(pathlib.Path(services.__file__).parents[1])')" \
    && mkdir -p "$site/docs" && mv /tmp/kb "$site/docs/kb" && rm -rf /tmp/wheels
USER botbus
WORKDIR /data
ENTRYPOINT ["botbus"]
CMD ["--help"]
