# One image for every botbus process; the command picks the part:
#   botbus gateway | botbus service <name> | botbus sandbox
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BOTBUS_DATA_DIR=/data

COPY pyproject.toml README.md nats.conf ./
COPY src ./src
COPY services ./services
COPY docs ./docs
RUN pip install --no-cache-dir -e . && mkdir -p /data

ENTRYPOINT ["botbus"]
CMD ["--help"]
