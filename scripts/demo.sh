#!/usr/bin/env bash
# The memnet demo: two node homes on this machine; publish, list, show, verify, export, import.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
work=${DEMO_DIR:-$(mktemp -d)}
alice="$work/alice" bob="$work/bob"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step memnet --home "$alice" init
step memnet --home "$bob" init

cat > "$work/notes.md" <<'NOTES'
memnet shares LLM memory between machines as signed, content-addressed MemCubes.

A MemCube is plaintext (notes, facts), activation (a KV cache for a token prefix) or parameter (a LoRA patch).

Every chunk is a CIDv1, so any IPFS tool computes the same identifier for the same bytes.
NOTES
notes=$(memnet --home "$alice" publish "$work/notes.md" --name demo-notes --tag demo --license CC-BY-4.0 \
        --description "What memnet is, in three notes")
echo "plaintext cube: $notes"

echo; echo "building a LoRA adapter with peft (tiny Llama base)..."
base=$(.venv/bin/python scripts/demo_adapter.py "$work/adapter")
adapter=$(memnet --home "$alice" publish "$work/adapter" --base-model "$base" --name demo-skill \
          --parent "$notes" --tag demo)
echo "parameter cube: $adapter"

step memnet --home "$alice" ls
step memnet --home "$alice" show "$adapter"
step memnet --home "$alice" verify
step memnet --home "$alice" export "$notes" "$adapter" -o "$work/demo.car"
step memnet --home "$bob" import "$work/demo.car"
step memnet --home "$bob" ls --author "$(memnet --home "$alice" id --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')"
step memnet --home "$bob" verify
step memnet --home "$bob" cat "$notes"
step memnet --home "$bob" cat "$adapter" -o "$work/adapter-from-bob"
.venv/bin/python - "$work/adapter" "$work/adapter-from-bob" <<'PY'
import sys
from safetensors.numpy import load_file
a, b = (load_file(f"{d}/adapter_model.safetensors") for d in sys.argv[1:3])
assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
print(f"adapter round trip through bob: {len(a)} tensors identical")
PY
printf '\n\033[1mbad input is refused with one line:\033[0m\n'
printf 'not a car file' > "$work/bad.car"
memnet --home "$bob" import "$work/bad.car" || echo "(exit code $?)"
echo; echo "demo finished; node homes are in $work"
