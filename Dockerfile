# sse-chat: one replica per container. Build: docker build -t sse-chat:1.0 .
# Both stages start from the same base (an official python:*-slim, or a stand-in with python).
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sse_chat/ sse_chat/
COPY static/ static/
# The wheel carries static/ as sse_chat/static; nothing of /src reaches the final stage.
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 sse-chat \
    && useradd --system --uid 10001 --gid sse-chat --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin sse-chat
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSE_CHAT_HOST=0.0.0.0 \
    SSE_CHAT_PORT=8000
USER 10001:10001
EXPOSE 8000
# Liveness only (not /readyz): a Redis outage must not get every replica killed and restarted.
# Python's urllib, since slim images have no curl; no proxy, whatever the environment says.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('SSE_CHAT_PORT', '8000'), timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself, then drains.
ENTRYPOINT ["sse-chat"]
CMD ["serve"]
