#!/usr/bin/env python
"""Campaign: the local surfaces (reliability issue 17, item 5).

    .venv/bin/python scripts/campaign_local.py [--only cli,control,modes,second] [--flood 2000]
                                               [--cli-every 1] [--json PATH]

One node home with a real daemon (its own process) and the real `memnet` command line:

modes    the home, identity key, config, daemon.json and LMDB's files are private to the user
         (0700 / 0600), also after `config set` rewrites the config and the daemon restarts
second   a second daemon on the same home is refused with one line while the first serves
control  the control port, raw: no token, a wrong token, a token of the wrong type, oversized
         and garbage frames, a frame announced and never sent, a request before the token, and
         --flood connections at once (more than the door admits); each must be hung up on or
         refused, and the daemon keep answering `status` (p50/p99 reported) in bounded memory
cli      every command given bad input (a table of about a hundred: non-UTF-8 and empty files,
         folders that are not adapters, a pickle in an adapter, malformed chat files, bogus CIDs
         and specs, an unwritable home, a file-size limit reached mid-write, ...): each must
         answer one `error:` line and a non-zero exit with no traceback, and store nothing: the
         store's cubes, chunks and pins are the same before and after, and verify

Exit status 1 on a finding.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import Sampler, rss  # noqa: E402
from campaign_fuzz import StatusProbe, percentile  # noqa: E402

from memnet.daemon import state as state_mod  # noqa: E402
from memnet.daemon.control import MAX_HELLO_FRAME, MAX_UNAUTHENTICATED, ControlClient, pack  # noqa: E402
from tests import factories  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
HEADER = struct.Struct(">I")
BOGUS_CID = "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
UNKNOWN_CID = "bafyreigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
PEER = "12D3KooWBmwkafWE2fqfzS96VoTZC2Uq2Djg7RhqeR2TRtyrm9a1"
BASE = "ab" * 32   # a base-model fingerprint (parameter cubes are bound to one)


def cli(home: Path, *args: str, timeout: float = 120, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limits() -> None:
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))
    return subprocess.run([sys.executable, "-m", "cli.main", "--home", str(home), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, preexec_fn=limits,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def one_line_error(proc: subprocess.CompletedProcess) -> str | None:
    """None when proc is a proper refusal of a user mistake, else what is wrong with it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        return "exit status 0"
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode}"
    if "Traceback" in proc.stderr:
        return "a traceback"
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"{len(lines)} lines on stderr: {' | '.join(lines)[:200]}"
    return None


def make_unwritable(paths: list[Path]) -> str | None:
    """Take write access away from paths (how: chmod, or chattr +i for root, whom modes do not
    stop); None if this machine cannot (root without chattr)."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o500 if path.is_dir() else 0o400)
        return "chmod"
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode == 0:
        return "chattr +i"
    return None


def make_writable(paths: list[Path], how: str | None) -> None:
    if how == "chattr +i":
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
    for path in paths:
        path.chmod(0o700 if path.is_dir() else 0o600)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the node ----------------------------------------------------------------------------------------

class Node:
    def __init__(self, root: Path):
        self.root, self.home = root, root / "home"
        assert cli(self.home, "init").returncode == 0
        notes = root / "seed.md"
        notes.write_text("A first fact.\n\nA second fact, on\ntwo lines.\n")
        self.cube = cli(self.home, "publish", str(notes)).stdout.strip()
        big = root / "big-seed.md"
        big.write_text("\n\n".join(f"Fact {i}: " + "words " * 60 for i in range(2000)))
        self.big = cli(self.home, "publish", str(big)).stdout.strip()
        adapter = root / "adapter"
        adapter.mkdir()
        config, weights = factories.lora_files()
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        (adapter / "adapter_model.safetensors").write_bytes(weights)
        self.adapter = cli(self.home, "publish", str(adapter), "--base-model", BASE).stdout.strip()
        self.proc: subprocess.Popen | None = None
        self.log = root / "daemon.log"

    def start(self) -> state_mod.DaemonState:
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "--home", str(self.home), "daemon",
                                          "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
                                         stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = state_mod.read(self.home)
            if current is not None and current.pid == self.proc.pid:
                self.state = current
                return current
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({self.proc.returncode}); see {self.log}")
            time.sleep(0.05)
        raise SystemExit("the daemon did not start in 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def snapshot(self) -> dict:
        """What the store holds: cubes, pins, and the chunk count (via the running daemon's status
        when it runs, else the command line)."""
        listed = json.loads(cli(self.home, "ls", "--json").stdout or "[]")
        return {"cubes": sorted((c["cid"], bool(c.get("pinned"))) for c in listed)}


# -- modes and a second daemon --------------------------------------------------------------------------

def check_modes(node: Node) -> dict:
    problems = []

    def want(path: Path, expected: int) -> None:
        if path.exists() and mode(path) != expected:
            problems.append(f"{path.relative_to(node.root)} is {oct(mode(path))}, not {oct(expected)}")
        elif not path.exists():
            problems.append(f"{path.relative_to(node.root)} missing")

    def all_files() -> None:
        want(node.home, 0o700)
        for name in ("identity.key", "config.json", "store/data.mdb", "store/lock.mdb"):
            want(node.home / name, 0o600)
        if node.proc is not None:
            want(node.home / state_mod.STATE_FILE, 0o600)

    all_files()
    if cli(node.home, "config", "set", "ask.k", "3").returncode != 0:
        problems.append("config set ask.k 3 failed")
    node.start()
    all_files()
    node.stop()
    node.start()
    all_files()
    print(f"modes: {'all private' if not problems else problems}")
    return {"problems": problems}


def check_second_daemon(node: Node) -> dict:
    t0 = time.perf_counter()
    second = cli(node.home, "daemon", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", timeout=60)
    took = time.perf_counter() - t0
    problem = one_line_error(second)
    serves = ControlClient(node.state).call("status", timeout=10)["peer_id"] is not None
    print(f"second daemon: {'refused in %.1f s: %s' % (took, second.stderr.strip()) if problem is None else problem}; "
          f"the first still serves: {serves}")
    return {"problem": problem, "seconds": took, "first_serves": serves, "message": second.stderr.strip()}


# -- the control port, raw ----------------------------------------------------------------------------------

def exchange(port: int, payload: bytes, wait: float = 8.0) -> bytes:
    """Send payload, then read until the daemon hangs up (or wait passes: still open is a finding)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return got
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return got + b"<still open>"
            except OSError:
                return got
            if not data:
                return got
            got += data
    return got + b"<still open>"


def control_cases(token: str) -> list[tuple[str, bytes]]:
    ask = lambda **hello: pack(hello)  # noqa: E731
    return [
        ("no token", ask(cmd="status", args={})),
        ("wrong token", ask(token="0" * len(token), cmd="status", args={})),
        ("token of the wrong type", ask(token=12345, cmd="status", args={})),
        ("empty token", ask(token="", cmd="status", args={})),
        ("token as bytes", ask(token=token.encode(), cmd="status", args={})),
        ("non-ASCII token", ask(token="é" * 20, cmd="status", args={})),
        ("hello past the cap", ask(token=token, cmd="status", args={"pad": b"x" * MAX_HELLO_FRAME})),
        ("oversized length", HEADER.pack(64 << 20) + b"x" * 1000),
        ("length 2**32-1", HEADER.pack(0xFFFFFFFF)),
        ("zero length", HEADER.pack(0)),
        ("not msgpack", HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1"),
        ("msgpack list", HEADER.pack(3) + b"\x92\x01\x02"),
        ("map with int keys", HEADER.pack(3) + b"\x81\x01\x02"),
        ("ends mid-frame", HEADER.pack(100) + b"short"),
        ("ends mid-header", b"\x00\x00"),
        ("nothing at all", b""),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        ("a TLS hello", bytes.fromhex("16030100c4010000c00303") + os.urandom(180)),
        ("random bytes", os.urandom(4096)),
    ]


def check_control(node: Node, flood: int) -> dict:
    port, token = node.state.control_port, node.state.token
    idle = rss(node.state.pid)
    sampler, probe = Sampler(node.state.pid), StatusProbe(node.state)
    sampler.start()
    probe.start()
    problems, answers = [], {}
    try:
        for label, payload in control_cases(token):
            got = exchange(port, payload)
            answers[label] = "hung up" if not got else ("still open" if got.endswith(b"<still open>") else "answered")
            if b"<still open>" in got:
                problems.append(f"{label}: the connection stayed open")
            elif b"peer_id" in got:
                problems.append(f"{label}: served without the right token")
        # a flood: `flood` connections at once, each sending the start of a hello and then nothing
        socks, refused, t0 = [], 0, time.perf_counter()
        for _ in range(flood):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(HEADER.pack(64))
                socks.append(sock)
            except OSError:
                refused += 1
        time.sleep(1.0)
        during = time.perf_counter()
        try:
            ControlClient(node.state).call("status", timeout=30)
            served_during = time.perf_counter() - during
        except Exception as exc:
            served_during = f"{type(exc).__name__}: {exc}"
        for sock in socks:
            sock.close()
        flood_s = time.perf_counter() - t0
    finally:
        time.sleep(1.0)
        probe.stop.set()
        sampler.stop.set()
        probe.join()
        sampler.join()
    row = {"cases": answers, "problems": problems, "flood": flood, "flood_refused_at_connect": refused,
           "flood_seconds": flood_s, "status_during_flood_s": served_during,
           "status_p50_ms": 1000 * percentile(probe.latencies, 0.5), "status_p99_ms": 1000 * percentile(probe.latencies, 0.99),
           "status_failures": probe.failures, "anon_idle_mb": idle["RssAnon"] / 1e6,
           "anon_peak_mb": sampler.peak["RssAnon"] / 1e6, "rss_idle_mb": idle["VmRSS"] / 1e6,
           "rss_peak_mb": sampler.peak["VmRSS"] / 1e6, "door": MAX_UNAUTHENTICATED}
    if not isinstance(served_during, float):
        problems.append(f"status failed while {flood} strangers waited: {served_during}")
    print(f"control: {len(answers)} bad hellos: " + ", ".join(f"{k} -> {v}" for k, v in answers.items()))
    print(f"  flood of {flood} connections (the door admits {MAX_UNAUTHENTICATED}): {refused} refused at "
          f"connect; status during it answered in {served_during if isinstance(served_during, str) else '%.3f s' % served_during}; "
          f"status p50 {row['status_p50_ms']:.1f} ms p99 {row['status_p99_ms']:.1f} ms; anonymous "
          f"{row['anon_idle_mb']:.0f} -> {row['anon_peak_mb']:.0f} MB, RSS {row['rss_idle_mb']:.0f} -> "
          f"{row['rss_peak_mb']:.0f} MB; problems: {problems or 'none'}")
    return row


# -- the command line -----------------------------------------------------------------------------------

def inputs(work: Path) -> dict[str, Path]:
    """The bad files and folders the CLI table uses."""
    work.mkdir(parents=True, exist_ok=True)
    made = {}

    def file(name: str, data: bytes) -> Path:
        made[name] = work / name
        made[name].write_bytes(data)
        return made[name]

    file("latin1.md", "caf\xe9 cr\xe8me\n".encode("latin-1"))
    file("empty.md", b"")
    file("blank.md", b"\n\n   \n\t\n")
    file("nul.md", b"text\x00with a NUL\n")
    file("not-a-list.json", b'{"text": "an object, not a list"}')
    file("bad.json", b'[{"text": "unterminated')
    file("bad.jsonl", b'{"text": "fine"}\n{not json}\n')
    file("items-no-text.json", b'[{"title": "no text field"}]')
    file("chat-not-json.json", b"user: hello")
    file("chat-object.json", b'{"role": "user", "content": "hi"}')
    file("chat-hacker.json", b'[{"role": "hacker", "content": "hi"}]')
    file("chat-no-content.json", b'[{"role": "user"}]')
    file("chat-int-content.json", b'[{"role": "user", "content": 42}]')
    file("chat-empty.json", b"[]")
    file("garbage.car", os.urandom(2048))
    file("empty.car", b"")
    file("pickle.bin", pickle.dumps({"weights": [1, 2, 3]}))
    for name in ("empty-folder", "random-folder", "pickle-adapter", "bad-safetensors", "no-config", "bad-config"):
        (work / name).mkdir(exist_ok=True)
        made[name] = work / name
    (work / "random-folder" / "notes.txt").write_text("not an adapter")
    config, weights = factories.lora_files()
    (work / "pickle-adapter" / "adapter_config.json").write_text(json.dumps(config))
    (work / "pickle-adapter" / "adapter_model.bin").write_bytes(pickle.dumps({"w": 1}))
    (work / "bad-safetensors" / "adapter_config.json").write_text(json.dumps(config))
    (work / "bad-safetensors" / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    (work / "no-config" / "adapter_model.safetensors").write_bytes(weights)
    (work / "bad-config" / "adapter_config.json").write_text("{not json")
    (work / "bad-config" / "adapter_model.safetensors").write_bytes(weights)
    made["fifo"] = work / "fifo"
    if not made["fifo"].exists():
        os.mkfifo(made["fifo"])
    big = work / "big.md"
    with big.open("w") as handle:
        for i in range(40_000):
            handle.write(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 20 + "\n\n")
    made["big.md"] = big
    return made


def cli_table(node: Node, f: dict[str, Path], work: Path) -> list[tuple[str, list[str]]]:
    cube = node.cube
    nowhere = "/nonexistent/folder/out"
    return [
        # publish
        ("publish non-UTF-8 notes", ["publish", f["latin1.md"]]),
        ("publish an empty file", ["publish", f["empty.md"]]),
        ("publish a blank file", ["publish", f["blank.md"]]),
        ("publish a missing file", ["publish", work / "missing.md"]),
        ("publish /dev/zero", ["publish", "/dev/zero"]),
        ("publish a FIFO", ["publish", f["fifo"]]),
        ("publish JSON that is not a list", ["publish", f["not-a-list.json"]]),
        ("publish broken JSON", ["publish", f["bad.json"]]),
        ("publish broken JSON lines", ["publish", f["bad.jsonl"]]),
        ("publish JSON items without text", ["publish", f["items-no-text.json"]]),
        ("publish an empty folder", ["publish", f["empty-folder"], "--base-model", BASE]),
        ("publish a folder that is not an adapter", ["publish", f["random-folder"], "--base-model", BASE]),
        ("publish a pickled adapter", ["publish", f["pickle-adapter"], "--base-model", BASE]),
        ("publish a safetensors with a huge header", ["publish", f["bad-safetensors"], "--base-model", BASE]),
        ("publish an adapter without config", ["publish", f["no-config"], "--base-model", BASE]),
        ("publish an adapter with a broken config", ["publish", f["bad-config"], "--base-model", BASE]),
        ("publish an adapter without --base-model", ["publish", f["pickle-adapter"]]),
        ("publish --kind bogus", ["publish", "--kind", "bogus", node.root / "seed.md"]),
        ("publish --kind parameter of notes", ["publish", "--kind", "parameter", node.root / "seed.md"]),
        ("publish --ttl -5", ["publish", "--ttl", "-5", node.root / "seed.md"]),
        ("publish --ttl not-a-number", ["publish", "--ttl", "soon", node.root / "seed.md"]),
        ("publish --parent bogus", ["publish", "--parent", "bogus", node.root / "seed.md"]),
        ("publish --to bogus", ["publish", "--to", "bogus", node.root / "seed.md"]),
        ("publish --base-model bogus", ["publish", "--base-model", "zz", f["no-config"]]),
        ("publish --name with a space", ["publish", "--name", "a b", node.root / "seed.md"]),
        ("publish --name too long", ["publish", "--name", "n" * 300, node.root / "seed.md"]),
        ("publish --tag too long", ["publish", "--tag", "t" * 5000, node.root / "seed.md"]),
        ("publish --description 100 KiB", ["publish", "--description", "d" * 100_000, node.root / "seed.md"]),
        # cube ids everywhere
        ("show a bogus CID", ["show", "bogus"]),
        ("show an unknown CID", ["show", UNKNOWN_CID]),
        ("show a CID of the wrong codec", ["show", BOGUS_CID]),
        ("verify a bogus CID", ["verify", "bogus"]),
        ("verify an unknown CID", ["verify", UNKNOWN_CID]),
        ("pin a bogus CID", ["pin", "bogus"]),
        ("pin an unknown CID", ["pin", UNKNOWN_CID]),
        ("unpin an unknown CID", ["unpin", UNKNOWN_CID]),
        ("cat a bogus CID", ["cat", "bogus"]),
        ("cat an unknown CID", ["cat", UNKNOWN_CID]),
        ("cat notes -o into a missing folder", ["cat", cube, "-o", nowhere]),
        ("export a bogus CID", ["export", "bogus", "-o", work / "out.car"]),
        ("export into a missing folder", ["export", cube, "-o", f"{nowhere}/x.car"]),
        ("import a missing archive", ["import", work / "missing.car"]),
        ("import random bytes", ["import", f["garbage.car"]]),
        ("import an empty file", ["import", f["empty.car"]]),
        ("import a folder", ["import", f["empty-folder"]]),
        ("revoke a bogus CID", ["revoke", "bogus"]),
        ("revoke an unknown CID", ["revoke", UNKNOWN_CID]),
        ("revoke --reason 1 KiB", ["revoke", cube, "--reason", "r" * 1024]),
        ("get a bogus CID", ["get", "bogus"]),
        ("find a bogus CID", ["find", "bogus"]),
        ("ls --kind bogus", ["ls", "--kind", "bogus"]),
        # generation and memory
        ("generate --chat not JSON", ["generate", "--chat", f["chat-not-json.json"], "--local"]),
        ("generate --chat an object", ["generate", "--chat", f["chat-object.json"], "--local"]),
        ("generate --chat role hacker", ["generate", "--chat", f["chat-hacker.json"], "--local"]),
        ("generate --chat without content", ["generate", "--chat", f["chat-no-content.json"], "--local"]),
        ("generate --chat int content", ["generate", "--chat", f["chat-int-content.json"], "--local"]),
        ("generate --chat empty", ["generate", "--chat", f["chat-empty.json"], "--local"]),
        ("generate --chat missing", ["generate", "--chat", work / "missing.json", "--local"]),
        ("generate --file non-UTF-8", ["generate", "--file", f["latin1.md"], "--local"]),
        ("generate --file empty", ["generate", "--file", f["empty.md"], "--local"]),
        ("generate --file /dev/zero", ["generate", "--file", "/dev/zero", "--local"]),
        ("generate -n -1", ["generate", "hello", "-n", "-1", "--local"]),
        ("generate -n 10**9", ["generate", "hello", "-n", "1000000000", "--local"]),
        ("generate --lora bogus", ["generate", "hello", "--lora", "bogus", "--local"]),
        ("generate --lora CID:abc", ["generate", "hello", "--lora", f"{cube}:abc", "--local"]),
        ("generate --lora a notes cube", ["generate", "hello", "--lora", cube, "--local"]),
        ("generate --kv-dtypes bogus", ["generate", "hello", "--kv-dtypes", "bogus", "--local"]),
        ("generate --model bogus", ["generate", "hello", "--model", "bogus", "--local"]),
        ("generate --fetch bogus", ["generate", "hello", "--fetch", "bogus", "--local"]),
        ("remember an empty text", ["remember", ""]),
        ("recall -k 0", ["recall", "fact", "-k", "0"]),
        ("recall -k -3", ["recall", "fact", "-k", "-3"]),
        ("ask -k -1", ["ask", "what?", "-k", "-1", "--dry-run"]),
        ("ask --promote-dtype bogus", ["ask", "what?", "--promote-dtype", "bogus", "--dry-run"]),
        ("ask an empty question", ["ask", "", "--dry-run"]),
        ("notes import non-UTF-8", ["notes", "import", f["latin1.md"]]),
        ("notes import empty", ["notes", "import", f["empty.md"]]),
        ("notes import broken JSON lines", ["notes", "import", f["bad.jsonl"]]),
        ("kv build --file non-UTF-8", ["kv", "build", "--file", f["latin1.md"]]),
        ("kv build --file empty", ["kv", "build", "--file", f["empty.md"]]),
        ("kv build --file missing", ["kv", "build", "--file", work / "missing.md"]),
        ("lora import an empty folder", ["lora", "import", f["empty-folder"]]),
        ("lora import a pickled adapter", ["lora", "import", f["pickle-adapter"]]),
        ("lora import a file", ["lora", "import", f["pickle.bin"]]),
        ("lora train on an empty file", ["lora", "train", f["empty.md"]]),
        ("lora train on non-UTF-8", ["lora", "train", f["latin1.md"]]),
        ("model pin bogus", ["model", "pin", "bogus"]),
        # names, trust, config
        ("name publish a bogus CID", ["name", "publish", "n", "bogus"]),
        ("name resolve bogus", ["name", "resolve", "bogus"]),
        ("name resolve a bad peer id", ["name", "resolve", "12D3KooWbogus/n"]),
        ("trust add a bogus peer", ["trust", "add", "bogus"]),
        ("trust add an unknown action", ["trust", "add", PEER, "--for", "bogus"]),
        ("trust rm a bogus peer", ["trust", "rm", "bogus"]),
        ("config set an unknown key", ["config", "set", "bogus.key", "1"]),
        ("config set a bad value", ["config", "set", "ask.k", "many"]),
        ("config set a negative count", ["config", "set", "ask.k", "-4"]),
        ("config get an unknown key", ["config", "get", "bogus"]),
        ("config unset an unknown key", ["config", "unset", "bogus"]),
    ]


def check_cli(node: Node, work: Path, every: int = 1) -> dict:
    """every: run one case in `every` of the table (a short run); the unwritable home and the
    file-size limits always run."""
    files = inputs(work / "inputs")
    before = node.snapshot()
    results, problems = [], []
    t0 = time.perf_counter()
    for label, args in cli_table(node, files, work)[::every]:
        proc = cli(node.home, *args)
        problem = one_line_error(proc)
        results.append({"case": label, "exit": proc.returncode, "stderr": proc.stderr.strip()[:300], "problem": problem})
        if problem:
            problems.append(f"{label}: {problem}")
    # an unwritable home, and a file-size limit reached mid-write (the store grows past it)
    alive = node.proc is not None and node.proc.poll() is None
    node.stop()
    store = node.home / "store"
    locked = [node.home, store, store / "data.mdb", store / "lock.mdb"]
    for label, args, prepare, limit, output in [
        ("publish into an unwritable home", ["publish", files["big.md"]], "unwritable", None, None),
        ("pin in an unwritable home", ["pin", node.cube], "unwritable", None, None),
        ("publish past the file-size limit", ["publish", files["big.md"]], None, 4 << 20, None),
        ("export past the file-size limit", ["export", node.big, "-o", work / "limited.car"], None, 64 << 10,
         work / "limited.car"),
        ("cat -o of an adapter into an unwritable folder", ["cat", node.adapter, "-o", work / "locked" / "out"],
         "locked folder", None, work / "locked" / "out"),
    ]:
        targets = {"unwritable": locked, "locked folder": [work / "locked"]}.get(prepare, [])
        (work / "locked").mkdir(exist_ok=True)
        how = make_unwritable(targets) if targets else None
        if targets and how is None:
            results.append({"case": label, "skipped": "root, and no chattr: nothing here can take write access away"})
            continue
        try:
            proc = cli(node.home, *args, limit_file_bytes=limit)
        finally:
            if targets:
                make_writable(targets, how)
        problem = one_line_error(proc)
        if problem is None and output is not None and output.exists():
            problem = f"left behind: {output.name}"
        results.append({"case": label, "exit": proc.returncode, "stderr": proc.stderr.strip()[:300], "problem": problem})
        if problem:
            problems.append(f"{label}: {problem}")
    after = node.snapshot()
    verify = cli(node.home, "verify")
    if after != before:
        problems.append(f"the store changed: {before} -> {after}")
    if verify.returncode != 0:
        problems.append(f"verify failed: {verify.stderr.strip()[:200]}")
    seconds = time.perf_counter() - t0
    print(f"cli: {len(results)} bad inputs in {seconds:.0f} s; {len(results) - len(problems)} answered with one line "
          f"and a non-zero exit; store unchanged: {after == before}; verify: {verify.returncode == 0}")
    for problem in problems:
        print(f"  FINDING {problem}")
    return {"cases": results, "problems": problems, "seconds": seconds, "store_unchanged": after == before,
            "daemon_alive": alive}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="modes,second,control,cli")
    ap.add_argument("--flood", type=int, default=2000, help="control connections at once")
    ap.add_argument("--cli-every", type=int, default=1, help="run one bad CLI input in this many (a short run)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = args.only.split(",")
    root = Path(tempfile.mkdtemp(prefix="memnet-local-"))
    node = Node(root)
    row: dict = {"work": str(root)}
    try:
        if "modes" in parts:
            row["modes"] = check_modes(node)
        if node.proc is None:
            node.start()
        if "second" in parts:
            row["second"] = check_second_daemon(node)
        if "control" in parts:
            row["control"] = check_control(node, args.flood)
        if "cli" in parts:
            row["cli"] = check_cli(node, root, args.cli_every)
        if node.proc is not None:
            row["daemon_alive"] = node.proc.poll() is None
        elif "cli" in parts:   # the CLI part stops it for the unwritable home: alive until then
            row["daemon_alive"] = row["cli"]["daemon_alive"]
    finally:
        node.stop()
    log = node.log.read_text(errors="replace") if node.log.exists() else ""
    row["tracebacks"] = log.count("Traceback")
    print(f"daemon log: {row['tracebacks']} tracebacks")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2, default=str) + "\n")
    finding = row["tracebacks"] or row.get("daemon_alive") is False or any(
        row[p].get("problems") for p in ("modes", "control", "cli") if p in row) or (
        "second" in row and (row["second"]["problem"] or not row["second"]["first_serves"]))
    print("FINDINGS: see above" if finding else "no findings")
    shutil.rmtree(root / "inputs", ignore_errors=True)
    return 1 if finding else 0


if __name__ == "__main__":
    raise SystemExit(main())
