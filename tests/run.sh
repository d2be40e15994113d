#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration, SDK interop).
# Usage: tests/run.sh            (from anywhere; sets up .venv for the interop tests on first run)
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output stays outside the checkout, so repeated runs on one machine are warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}"

# The embedding model and ONNX Runtime for the semantic cache (a no-op when present and verified).
python3 models/fetch.py

# The official OpenAI and Anthropic Python SDKs for tests/it/interop.rs.
if ! .venv/bin/python -c 'import openai, anthropic, google.genai, botocore, mcp, mcp_server_time, yaml, jsonschema' 2>/dev/null; then
  echo "== setting up .venv with the OpenAI, Anthropic, Google GenAI and MCP SDKs"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi

# playwright-core (pinned in tests/ui/package-lock.json; it drives the system's Chromium, no
# browser download) for the web UI test.
if [ ! -d tests/ui/node_modules/playwright-core ]; then
  echo "== npm ci in tests/ui"
  (cd tests/ui && npm ci --no-audit --no-fund --silent)
fi

# The WebAssembly sample plugin, built from its AssemblyScript source (compiler pinned in
# plugins/tag-and-route/package-lock.json); tests/it/plugins_wasm.rs loads the result.
if [ ! -d plugins/tag-and-route/node_modules/assemblyscript ]; then
  echo "== npm ci in plugins/tag-and-route"
  (cd plugins/tag-and-route && npm ci --no-audit --no-fund --silent)
fi
echo "== building plugins/tag-and-route (AssemblyScript -> WebAssembly)"
(cd plugins/tag-and-route && npm run --silent build)

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast
