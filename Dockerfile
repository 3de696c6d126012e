# The session-ledger listener: `docker run IMAGE run --http-port 9187` with DATABASE_URL set.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY listener ./listener
COPY sql ./sql
# A plain install: the wheel carries the SQL files, so /src is not needed at run time.
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin listener
USER listener
WORKDIR /home/listener

EXPOSE 9187
# The HTTP port binds loopback by default; in a container that is unreachable from a
# published port, so the image binds every interface and the host decides what to publish.
ENV LISTENER_HTTP_HOST=0.0.0.0
# Liveness: /livez answers 200 while the listener's loop goes round, through a database
# outage and a deliberate pause alike (`listener pause` must not mark every container
# unhealthy); /readyz is for readiness, see docs/operations.md. The image has no curl;
# Python is there anyway. Only `run --http-port 9187` serves it, so the one-shot commands
# (migrate, complete-past) report unhealthy if left running: they are not.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LISTENER_HTTP_PORT', '9187') + '/livez', timeout=4)"]

ENTRYPOINT ["listener"]
CMD ["run", "--http-port", "9187"]
