# aiorch: the gateway, and the mock upstream (`aiorch mock-upstream`) for demos and tests.
#
#   docker build -t aiorch:local .
#   docker run --rm -p 8000:8000 -e QWEN_OLLAMA_URL=http://host.docker.internal:11434 aiorch:local
#
# Configuration is the environment (AIORCH_*, KIMI_*, QWEN_*; see docs/deploy.md). Several workers:
# AIORCH_WORKERS=N, their metrics merged in a temporary directory under /tmp.

# Build stage: compilers and pip's cache never reach the runtime image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aiorch
WORKDIR /src
# The locked versions, hashes checked (requirements/runtime.txt, what `make run` installs); a
# layer of its own, so that a change to the code alone does not reinstall them.
COPY requirements/runtime.txt ./requirements/
RUN /opt/aiorch/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/aiorch/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11-slim
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 aiorch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin aiorch
COPY --from=build /opt/aiorch /opt/aiorch
# No .pyc files written at run time: the root filesystem may be read-only.
ENV PATH=/opt/aiorch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIORCH_HOST=0.0.0.0 \
    AIORCH_PORT=8000
USER 10001:10001
EXPOSE 8000
# Python rather than curl: the slim image has no curl, and one less package is one less CVE.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AIORCH_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["aiorch"]
CMD ["serve"]
