#!/usr/bin/env bash
# The memnet demo: node homes on this machine; publish, list, show, verify, export, import; then
# three daemons on loopback: publish on one, find and fetch (verified) on another, signed names;
# KV and LoRA cubes, memory and ask, consolidation, distributed inference; the OpenAI-compatible API and dashboard.
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
printf '\n\033[1mthe swarm: three daemons on loopback\033[0m\n'
carol="$work/carol"
memnet --home "$carol" init >/dev/null
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start() {  # start a daemon for home $1 (further args go to `memnet daemon`); wait for daemon.json
  local home=$1; shift
  memnet --home "$home" daemon --listen /ip4/127.0.0.1/tcp/0 "$@" >"$home.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do [ -f "$home/daemon.json" ] && return; sleep 0.1; done
  echo "daemon for $home did not start:"; cat "$home.log"; exit 1
}
addr() { .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["addrs"][0])' "$1/daemon.json"; }
start "$alice"
start "$bob" --bootstrap "$(addr "$alice")"
start "$carol" --bootstrap "$(addr "$bob")"   # carol knows only bob: alice is found through the DHT
step memnet --home "$carol" status
head -c 6000000 /dev/urandom | base64 -w 160 | awk 'NR % 40 == 0 {print ""} 1' > "$work/big-notes.txt"
big=$(memnet --home "$alice" publish "$work/big-notes.txt" --name big-notes)
echo "alice published $big"
step memnet --home "$carol" find "$big"
step memnet --home "$carol" get "$big"
step memnet --home "$carol" verify "$big"
step memnet --home "$bob" find "$big"        # alice and now carol, who provides what she fetched
step memnet --home "$alice" name publish latest-notes "$big"
step memnet --home "$bob" name resolve "$(memnet --home "$alice" id --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')/latest-notes"
printf '\n\033[1ma cube nobody has:\033[0m\n'
memnet --home "$carol" get bafkreiemqpndzewx4bioklzfvhtiegsfny5fxuc3nkjk2vmcpjxiammsti || echo "(exit code $?)"

printf '\n\033[1mmodel memory: a prefill computed once, reused by a peer\033[0m\n'
# the converted model folder is shared by every node on this machine, and kept between demos
export MEMNET_MODELS=${MEMNET_MODELS:-$PWD/.cache/models}
step memnet --home "$alice" model pin smollm2
memnet --home "$carol" model pin smollm2 >/dev/null
step memnet --home "$carol" model ls
.venv/bin/python - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
doc = Path("docs/MIP.md").read_text().split("## 9.")[0][:6000]
system = {"role": "system", "content": "Answer from this specification.\n\n" + doc}
(work / "context.json").write_text(json.dumps([system]))
(work / "question.json").write_text(json.dumps([system, {"role": "user", "content": "What is a MemCube made of?"}]))
PY
kv=$(memnet --home "$alice" kv build --chat "$work/context.json" --dtype float16 --name mip-context)
echo "alice built and announced activation cube $kv"
step memnet --home "$alice" show "$kv"
alice_id=$(memnet --home "$alice" id --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
# a node injects only its own memory into its model unless told otherwise
step memnet --home "$carol" trust add "$alice_id" --for pin,inject
printf '\ncarol, full prefill (nothing reused):\n'
memnet --home "$carol" generate --chat "$work/question.json" -n 40 --no-cache
printf '\ncarol again: the longest cached prefix is found in the swarm and fetched from alice:\n'
memnet --home "$carol" generate --chat "$work/question.json" -n 40 --check
printf '\nand once more: now it is in carol'"'"'s own store:\n'
memnet --home "$carol" generate --chat "$work/question.json" -n 40

printf '\n\033[1ma skill as a LoRA cube: trained on alice (CPU, rank 8), applied on carol\033[0m\n'
for _ in 1 2 3 4 5 6; do
  printf 'Q: What is the mascot of memnet?\nA: The mascot of memnet is Mnemo, a tangerine octopus who never forgets.\n\n'
  printf 'Q: Who is Mnemo?\nA: Mnemo is the tangerine octopus mascot of memnet.\n\n'
done > "$work/skill.txt"
skill=$(memnet --home "$alice" lora train "$work/skill.txt" --steps 12 --name mascot-skill)
step memnet --home "$carol" get "$skill"
echo '[{"role": "user", "content": "Who is the mascot of memnet?"}]' > "$work/mascot.json"
printf '\nwithout the skill:\n'
memnet --home "$carol" generate --chat "$work/mascot.json" -n 24 --local
printf '\nwith it (--lora %s):\n' "$skill"
memnet --home "$carol" generate --chat "$work/mascot.json" -n 24 --local --lora "$skill"
printf '\n\033[1mmemory that schedules itself: recall, ask, promotion, private cubes, revocation, audit\033[0m\n'
cat > "$work/team.md" <<'EOF'
# Office
The office wifi network is called Heron and its password is tangerine-42.

The office is closed on public holidays; the spare key is with Marta from facilities.

# Project
The memnet demo runs every Friday at 15:00 in room B2.

Our build server is named kestrel and lives in rack 4 of the basement.
EOF
step memnet --home "$alice" notes import "$work/team.md" --name team-notes
step memnet --home "$alice" recall "how do I get on the wireless network?" -k 2
memnet --home "$alice" ask "What is the office wifi password?" -n 20 >/dev/null 2>&1
printf '\nthe second time this memory set is used, its prompt prefix becomes a KV cube:\n'
step memnet --home "$alice" ask "What is the office wifi password?" -n 20 --explain
printf '\nso the next request with the same memories reuses it:\n'
step memnet --home "$alice" ask "What is the office wifi password?" -n 20 --explain
step memnet --home "$alice" audit --last 2
printf '\n\033[1mmemory that consolidates: a hot memory set distilled into a LoRA cube, published only past its gate\033[0m\n'
set_key=$(memnet --home "$alice" ask "What's the wifi password at the office?" -n 20 --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["memory_set"])')
step memnet --home "$alice" consolidate
step memnet --home "$alice" consolidate "${set_key:0:12}" --steps 40
printf '\nasked with the question alone, the adapter answers from what it learned:\n'
step memnet --home "$alice" ask "What is the office wifi password?" -n 20 --explain --way adapter
carol_to=$(memnet --home "$carol" id --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["recipient"])')
secret=$(memnet --home "$alice" remember "The launch moved to 3 March; tell no one yet." --to "$carol_to")
step memnet --home "$bob" get "$secret"
printf '\nbob stores and serves it, but it is sealed to carol:\n'
memnet --home "$bob" cat "$secret" || echo "(exit code $?)"
step memnet --home "$carol" get "$secret"
step memnet --home "$carol" cat "$secret"
step memnet --home "$alice" revoke "$secret" --reason "the date changed again"
printf '\nafter the revocation, a node that has not fetched it yet is refused:\n'
memnet --home "$carol" unpin "$secret" >/dev/null; memnet --home "$carol" gc >/dev/null
memnet --home "$carol" get "$secret" || echo "(exit code $?)"

printf '\n\033[1mdistributed inference: span servers on hivemind, their caches seeded from a cube\033[0m\n'
# carol restarts with her hivemind bridge (the client of the chain); s1 serves layers 0-14 of
# SmolLM2, s2 and s3 both serve 15-29 (so one of them can go)
memnet --home "$carol" shutdown >/dev/null
for _ in $(seq 100); do [ -f "$carol/daemon.json" ] || break; sleep 0.1; done
start "$carol" --bootstrap "$(addr "$bob")" --hivemind --hivemind-listen /ip4/127.0.0.1/tcp/0
bridge_addr() {  # the hivemind multiaddr of a node's bridge, once it is ready
  for _ in $(seq 600); do
    a=$(memnet --home "$1" status --json | .venv/bin/python -c 'import json,sys; b=json.load(sys.stdin)["bridge"]; print(b["maddrs"][0] if b.get("state") == "ready" else "")')
    [ -n "$a" ] && { echo "$a"; return; }; sleep 0.3
  done
  echo "the bridge of $1 did not start" >&2; exit 1
}
hm=$(bridge_addr "$carol")
declare -A span=([s1]=0:15 [s2]=15:30 [s3]=15:30)
for n in s1 s2 s3; do
  memnet --home "$work/$n" init >/dev/null; memnet --home "$work/$n" model pin smollm2 >/dev/null
  start "$work/$n" --bootstrap "$(addr "$alice")" --serve-blocks "${span[$n]}" --hivemind-listen /ip4/127.0.0.1/tcp/0 --hivemind-peer "$hm"
done
for n in s1 s2 s3; do bridge_addr "$work/$n" >/dev/null; done
for _ in $(seq 100); do [ "$(memnet --home "$carol" spans --json | .venv/bin/python -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 3 ] && break; sleep 0.5; done
step memnet --home "$carol" spans
printf '\ncarol generates through the chain; alice'"'"'s prefix cube seeds every server (each fetches only its layers):\n'
memnet --home "$carol" generate --chat "$work/question.json" -n 24 --distributed --json > "$work/dist.json"
.venv/bin/python - "$work/dist.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["text"].strip())
print(f"TTFT {r['ttft'] * 1000:.0f} ms, {r['reused']}/{r['prompt_tokens']} prompt tokens seeded from cube {r['cube']}")
for hop in r["route"]:
    print(f"  layers [{hop['start']:>2}, {hop['end']:>2}) on {hop['peer']} ({hop['source']}, fetched {hop['fetched']:,} bytes)")
PY
gone=$(.venv/bin/python -c 'import json,sys; print([h["peer"] for h in json.load(open(sys.argv[1]))["route"] if h["start"] == 15][0])' "$work/dist.json")
for n in s2 s3; do
  if [ "$(memnet --home "$work/$n" id --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')" = "$gone" ]; then
    printf '\nstopping %s (layers 15-29 of that route):\n' "$n"; memnet --home "$work/$n" shutdown
  fi
done
printf '\nthe next generation routes around it, with the same answer:\n'
memnet --home "$carol" generate --chat "$work/question.json" -n 24 --distributed
printf '\n\033[1mthe HTTP face: an OpenAI-compatible API with the model resident, and a dashboard\033[0m\n'
# alice restarts with the API on loopback; any OpenAI client can use her memory unchanged
memnet --home "$alice" shutdown >/dev/null
for _ in $(seq 100); do [ -f "$alice/daemon.json" ] || break; sleep 0.1; done
start "$alice" --bootstrap "$(addr "$bob")" --http-listen 127.0.0.1:0
for _ in $(seq 600); do
  [ "$(memnet --home "$alice" status --json | .venv/bin/python -c 'import json,sys; print(((json.load(sys.stdin).get("http") or {}).get("model") or {}).get("state"))')" = ready ] && break; sleep 0.2
done
step memnet --home "$alice" status
api=$(memnet --home "$alice" dashboard --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["api"])')
.venv/bin/python scripts/demo_http.py "$api" README.md
dash=$(memnet --home "$alice" dashboard)
printf '\nthe dashboard (open it in a browser; the token in the URL lets the page act):\n  %s\n' "$dash"
if command -v chromium >/dev/null; then
  chromium --headless=new --no-sandbox --disable-gpu --window-size=1400,1700 --virtual-time-budget=4000 \
    --screenshot="$work/dashboard.png" "$dash" >/dev/null 2>&1 && echo "  (a screenshot of it: $work/dashboard.png)"
fi
for home in "$alice" "$bob" "$carol" "$work/s1" "$work/s2" "$work/s3"; do memnet --home "$home" shutdown >/dev/null 2>&1 || true; done
wait
printf '
[1mat home: nodes behind NATs, reached through a relay, then directly after a hole punch[0m
'
.venv/bin/python scripts/demo_nat.py
echo; echo "demo finished; node homes and daemon logs are in $work"
