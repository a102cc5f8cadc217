# scanfill as a container image: a wheel built in a throw-away stage, installed into a slim Python
# with no compiler or build tool left behind, run as an unprivileged user.
#   docker build -t REGISTRY/scanfill:0.1.0 . && docker push REGISTRY/scanfill:0.1.0
#   docker run --rm -e DATABASE_URL -e SCAN_URL REGISTRY/scanfill:0.1.0 run --concurrency 32 --no-progress
FROM python:3.12-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin scanfill
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm -f /tmp/*.whl
USER 10001
WORKDIR /home/scanfill
EXPOSE 9464
ENTRYPOINT ["scanfill"]
CMD ["--help"]
