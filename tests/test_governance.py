"""Governance: the trust policy (whose cubes are fetched, pinned, injected), signed revocations
(format, local effect, the MIP server, a real swarm), per-peer quotas and the audit log."""

from __future__ import annotations

import hashlib
import json
import time

import msgpack
import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.utils import InvalidRecordType

from cli.main import main as cli_main
from memnet import api, config, home, local
from memnet.cube import canonical, cid, keys, revocation
from memnet.errors import (CanonicalError, CIDError, FormatError, HomeError, LimitError, PeerError, PolicyError,
                           SignatureError, UsageError)
from memnet.governance import audit, revocations
from memnet.governance.gate import Gate
from memnet.governance.trust import TrustPolicy
from memnet.net.names import validator
from memnet.net.quota import RollingQuota
from memnet.net.ratelimit import TokenBucket
from memnet.net.revocation_records import RevocationValidator
from memnet.config import ServeLimits
from memnet.store import Store
from tests import factories
from tests.cli_helpers import memnet
from tests.swarm_helpers import Swarm, notes_file, stored

ALICE, BOB = factories.key("alice"), factories.key("bob")
A, B = keys.public_bytes(ALICE), keys.public_bytes(BOB)
CUBE = cid.cid_of(b"a cube manifest")
NOW = 1_790_000_000


# -- trust policy --------------------------------------------------------------------------------

def test_default_policy_fetches_anyone_pins_and_injects_only_self():
    policy = config.parse(config.file.initial()).trust
    assert policy == TrustPolicy()
    assert policy.allows("fetch", B, A) and policy.allows("fetch", A, A)
    for action in ("pin", "inject"):
        assert policy.allows(action, A, A) and not policy.allows(action, B, A)
    why = policy.reason("inject", B, A)
    assert "not trusted" in why and keys.peer_id(B) in why and f"memnet trust add {keys.peer_id(B)}" in why
    assert "anyone" in policy.reason("fetch", B, A) and "self" in policy.reason("pin", A, A)


def test_explicit_ids_and_anyone():
    config_json = {"trust": {"inject": [keys.peer_id(B)], "pin": ["*"]}}  # fetch keeps its default
    policy = config.parse(config_json).trust
    assert policy.fetch == ("*",) and policy.pin == ("*",)
    assert policy.allows("inject", B, A) and not policy.allows("inject", A, A)  # self not listed: not trusted
    assert policy.allows("pin", B, A) and policy.allows("pin", A, A)
    assert keys.peer_id(B) in policy.reason("inject", B, A)
    added = policy.add("self", ["inject"]).add(keys.peer_id(A), "fetch,pin")
    assert added.inject == (keys.peer_id(B), "self") and keys.peer_id(A) in added.pin
    assert added.add("self", ["inject"]) == added  # no duplicates
    removed = added.remove(keys.peer_id(B))
    assert not removed.allows("inject", B, A) and removed.allows("inject", A, A)
    assert config.parse({"trust": removed.to_config()}).trust == removed


@pytest.mark.parametrize("trust, phrase", [
    ({"inject": ["12D3KooWnotapeer"]}, "not a PeerID"),
    ({"inject": [7]}, "must be a string"),
    ({"share": ["*"]}, "unknown trust action"),
    ({"pin": "self"}, "must be a list"),
    (["self"], "must be an object"),
])
def test_bad_trust_config_is_a_one_line_home_error(trust, phrase):
    with pytest.raises(HomeError, match=phrase):
        config.parse({"trust": trust})


def test_bad_entries_and_actions():
    with pytest.raises(UsageError, match="not a PeerID"):
        TrustPolicy().add("QmSomethingElse", ["fetch"])
    with pytest.raises(UsageError, match="actions must be among"):
        TrustPolicy().add("*", "fetch,share")
    with pytest.raises(UsageError, match="actions must be among"):
        TrustPolicy().add("*", "")


def cli(capsys, node_home, *args: str) -> tuple[int, str, str]:
    """The real `memnet` entry point, in process (each subprocess would cost a second)."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--home", str(node_home), *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_line_error(result: tuple[int, str, str], phrase: str) -> None:
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result
    assert phrase.lower() in lines[0].lower() and "Traceback" not in err


def test_trust_cli_add_rm_ls(tmp_path, capsys):
    node = home.init(tmp_path / "home")
    peer = keys.peer_id(B)
    code, out, _ = cli(capsys, node.home, "trust", "ls", "--json")
    assert code == 0 and json.loads(out) == {"fetch": ["*"], "pin": ["self"], "inject": ["self"]}
    assert cli(capsys, node.home, "trust", "add", peer, "--for", "inject,pin")[0] == 0
    code, out, _ = cli(capsys, node.home, "trust", "ls")
    assert code == 0 and f"inject  self {peer}" in out and f"pin     self {peer}" in out
    assert cli(capsys, node.home, "trust", "rm", peer, "--for", "pin")[0] == 0
    policy = config.load(node.home).trust
    assert policy.inject == ("self", peer) and policy.pin == ("self",)
    written = json.loads((node.home / "config.json").read_text())
    assert written["chunk_size"] == node.config.chunk_size  # the rest of the file is kept
    code, _, err = cli(capsys, node.home, "trust", "rm", "*", "--for", "fetch")
    assert code == 0 and config.load(node.home).trust.fetch == ()
    before = (node.home / "config.json").read_bytes()
    one_line_error(cli(capsys, node.home, "trust", "add", "12D3KooWbogus"), "not a PeerID")
    one_line_error(cli(capsys, node.home, "trust", "add", peer, "--for", "share"), "actions must be among")
    one_line_error(cli(capsys, node.home, "trust", "rm", peer, "--for", "fetch"), "not in the trust list")
    assert (node.home / "config.json").read_bytes() == before  # refused: nothing written
    (node.home / "config.json").write_text('{"trust": {"inject": ["nobody"]}}')
    one_line_error(cli(capsys, node.home, "trust", "ls"), "not a PeerID")


def test_gate_refuses_revoked_and_untrusted_and_remembers_why(tmp_path):
    store = Store(str(tmp_path / "store"))
    try:
        gate = Gate(store, TrustPolicy(), A)
        assert gate.allows("inject", CUBE, A) and not gate.allows("inject", CUBE, B)
        assert "not trusted" in gate.summary() and cid.to_text(CUBE) in gate.summary()
        store.put_records(revocations.TABLE, [(CUBE, revocation.sign(ALICE, CUBE, NOW, "leaked"))])
        with pytest.raises(PolicyError, match="revoked by its author \\(leaked\\)"):
            gate.check("fetch", CUBE, A)
    finally:
        store.close()


# -- revocation records ----------------------------------------------------------------------------

def fields(data: bytes) -> dict:
    return canonical.decode(data, revocation.MAX_RECORD)


def resign(data: bytes, k=ALICE, **changes) -> bytes:
    unsigned = {n: v for n, v in fields(data).items() if n != "sig"}
    unsigned.update(changes)
    sig = keys.sign(k, revocation.SIGN_DOMAIN, canonical.encode(unsigned))
    return canonical.encode({**unsigned, "sig": sig})


def test_revocation_round_trip_and_documented_bytes():
    data = revocation.sign(ALICE, CUBE, NOW, "superseded by a fix")
    record = revocation.decode(data, key=revocation.dht_key(A, CUBE))
    assert (record.revokes, record.author, record.created, record.reason) == (CUBE, A, NOW, "superseded by a fix")
    assert record.encode() == data and list(fields(data)) == ["author", "created", "reason", "revokes", "sig"]
    unsigned = canonical.encode({k: v for k, v in fields(data).items() if k != "sig"})
    keys.verify(A, b"memnet/mip/v1/revocation\x00", unsigned, record.sig)
    assert record.key == "/memnet-revoke/" + hashlib.sha256(b"memnet/revoke\x00" + A + CUBE).hexdigest()
    bare = revocation.decode(revocation.sign(ALICE, CUBE, NOW))
    assert bare.reason is None and "reason" not in fields(bare.encode())
    revocation.check_author(record, CUBE, A)


def test_forged_revocations_are_refused():
    data = revocation.sign(ALICE, CUBE, NOW)
    with pytest.raises(SignatureError):  # bob signs a record that names alice as the author
        revocation.decode(resign(data, BOB))
    with pytest.raises(SignatureError):  # another cube, alice's old signature
        revocation.decode(canonical.encode({**fields(data), "revokes": cid.cid_of(b"other")}))
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(SignatureError):
        revocation.decode(bytes(flipped))
    manifest_sig = keys.sign(ALICE, b"memnet/mip/v1/manifest\x00",
                             canonical.encode({k: v for k, v in fields(data).items() if k != "sig"}))
    with pytest.raises(SignatureError):  # a signature made for another purpose
        revocation.decode(canonical.encode({**fields(data), "sig": manifest_sig}))


def test_wrong_author_and_wrong_key_are_refused():
    bobs = revocation.decode(revocation.sign(BOB, CUBE, NOW))  # valid, but bob did not write the cube
    with pytest.raises(PolicyError, match="not by the cube's author"):
        revocation.check_author(bobs, CUBE, A)
    with pytest.raises(PolicyError, match="is for"):
        revocation.check_author(bobs, cid.cid_of(b"other"), B)
    with pytest.raises(PolicyError, match="key"):  # bob's record placed under alice's key
        revocation.decode(bobs.encode(), key=revocation.dht_key(A, CUBE))


def test_truncated_oversized_and_malformed_revocations():
    data = revocation.sign(ALICE, CUBE, NOW, "r")
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        with pytest.raises(FormatError):
            revocation.decode(data[:cut])
    with pytest.raises(LimitError):
        revocation.decode(data + b"\x00" * revocation.MAX_RECORD)
    with pytest.raises(LimitError):
        revocation.sign(ALICE, CUBE, NOW, "x" * (revocation.MAX_REASON + 1))
    with pytest.raises(CanonicalError):
        revocation.decode(data + b"\x00")  # trailing bytes
    with pytest.raises(CanonicalError):  # unsorted keys
        revocation.decode(msgpack.packb(dict(reversed(list(fields(data).items()))), use_bin_type=True))
    with pytest.raises(FormatError):
        revocation.decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="must be a map"):
        revocation.decode(canonical.encode([1, 2]))
    for changes, error in [({"extra": 1}, FormatError), ({"created": -1}, FormatError),
                           ({"created": True}, FormatError), ({"author": b"short"}, FormatError),
                           ({"revokes": b"\x01\x55\x12\x20" + b"\x00" * 31}, CIDError),
                           ({"reason": ""}, FormatError), ({"reason": "two\nlines"}, FormatError),
                           ({"reason": "\x1b[31mred"}, FormatError), ({"sig": b"\x00" * 10}, FormatError)]:
        with pytest.raises(error):
            revocation.decode(canonical.encode({**fields(data), **changes}))
    for missing in ("author", "created", "revokes", "sig"):
        with pytest.raises(FormatError, match="lacks"):
            revocation.decode(canonical.encode({k: v for k, v in fields(data).items() if k != missing}))


def test_dht_validator_accepts_only_the_authors_record_under_its_key():
    data = revocation.sign(ALICE, CUBE, NOW)
    key = revocation.dht_key(A, CUBE)
    dht = validator()
    dht.validate(key, data)  # the daemon's strict validator knows the namespace
    for bad_key, bad in [(key, revocation.sign(BOB, CUBE, NOW)), (key, b"\x80"),
                         (revocation.dht_key(A, cid.cid_of(b"x")), data)]:
        with pytest.raises(InvalidRecordType):
            dht.validate(bad_key, bad)
    later = revocation.sign(ALICE, CUBE, NOW + 5)
    assert RevocationValidator().select(key, [later, b"junk", data]) == 2  # the earliest valid one
    with pytest.raises(InvalidRecordType):
        RevocationValidator().select(key, [b"junk"])


def test_accept_checks_before_storing(tmp_path):
    store = Store(str(tmp_path / "store"))
    try:
        cube = factories.plaintext_cube(ALICE)
        store.put(cube, "fetched")
        with pytest.raises(PolicyError, match="not by the cube's author"):
            revocations.accept(store, revocation.sign(BOB, cube.cube_id, NOW), cube.cube_id, A)
        with pytest.raises(SignatureError):
            revocations.accept(store, resign(revocation.sign(ALICE, cube.cube_id, NOW), BOB), cube.cube_id, A)
        assert not revocations.is_revoked(store, cube.cube_id) and store.entry(cube.cube_id).pin
        revocations.accept(store, revocation.sign(ALICE, cube.cube_id, NOW), cube.cube_id, A)
        assert revocations.is_revoked(store, cube.cube_id) and not store.has(cube.cube_id)  # dropped
        with pytest.raises(PolicyError, match="revoked by its author"):
            revocations.refuse_revoked(store, cube.cube_id)
    finally:
        store.close()


def test_revoke_cli_only_for_the_author(tmp_path, capsys):
    node = home.init(tmp_path / "home")
    notes = tmp_path / "notes.txt"
    notes.write_text("a fact worth sharing")
    own = cli(capsys, node.home, "publish", str(notes))[1].strip()
    other = factories.plaintext_cube(BOB)
    node.store.put(other, "fetched")
    one_line_error(cli(capsys, node.home, "revoke", cid.to_text(other.cube_id)), "only its author")
    one_line_error(cli(capsys, node.home, "revoke", cid.to_text(CUBE)), "no cube")
    one_line_error(cli(capsys, node.home, "revoke", "bafkreinot"), "bafkreinot")
    assert revocations.all_records(node.store) == []
    code, out, _ = cli(capsys, node.home, "revoke", own, "--reason", "wrong numbers")
    assert code == 0 and "revoked" in out and "start the daemon" in out
    record = revocations.stored(node.store, cid.from_text(own))
    assert record.author == node.author and record.reason == "wrong numbers"
    assert not node.store.has(cid.from_text(own))  # dropped: only the record stays
    again, new = revocations.revoke(node.publisher, cid.from_text(own), "other words")
    assert not new and again == record.encode()  # one record per cube


def test_a_revoked_cube_is_not_pinned_or_imported_again(tmp_path, capsys):
    node = home.init(tmp_path / "home")
    for i in range(2):
        (tmp_path / f"n{i}.txt").write_text(f"fact {i}")
    kept, withdrawn = (cli(capsys, node.home, "publish", str(tmp_path / f"n{i}.txt"))[1].strip() for i in range(2))
    archive = tmp_path / "both.car"
    assert cli(capsys, node.home, "export", kept, withdrawn, "-o", str(archive))[0] == 0
    assert cli(capsys, node.home, "revoke", withdrawn)[0] == 0
    one_line_error(cli(capsys, node.home, "pin", withdrawn), "revoked by its author")
    assert not node.store.has(cid.from_text(withdrawn))
    # another node that knows the revocation: the archive is refused whole, nothing is stored
    other = home.init(tmp_path / "other")
    record = node.store.get_record(revocations.TABLE, cid.from_text(withdrawn))
    revocations.accept(other.store, record, cid.from_text(withdrawn), node.author)
    one_line_error(cli(capsys, other.home, "import", str(archive)), "revoked by its author")
    assert not other.store.has(cid.from_text(kept)) and not other.store.has(cid.from_text(withdrawn))
    code, out, _ = cli(capsys, other.home, "pin", kept)
    assert code != 0  # nothing was imported to pin


# -- a model: trust and revocation decide what reaches generation ---------------------------------

def _ids(loaded, n: int, seed: int = 0) -> list[int]:
    text = " ".join(f"memory {i} is content addressed, fox {i * 7 + seed}" for i in range(n))
    return loaded.encode(text)[:n]


def test_untrusted_or_revoked_kv_cube_is_never_injected(tmp_path, models, tiny_model_dir):
    from memnet.model import generate, loader

    author, user = home.init(tmp_path / "author"), home.init(tmp_path / "user")
    loaded = loader.load(author.models.pin(str(tiny_model_dir))[0])
    ids = _ids(loaded, 40)
    cube, _ = generate.build(author.publisher, author.perf, loaded, ids, "float32")
    local.export(author.store, [cube.cube_id], tmp_path / "kv.car")
    local.import_archive(user.store, tmp_path / "kv.car")
    prompt = ids + _ids(loaded, 6, seed=3)
    options = generate.Options(max_new_tokens=3)

    refused = generate.generate(user.store, user.gate(), user.perf, loaded, prompt, options)
    assert refused.reused == 0 and refused.source == "none" and refused.cube_id is None  # a full prefill
    assert "not trusted" in refused.decision and author.peer_id in refused.decision
    assert "full prefill" in refused.timing_line()

    config.update(user.home, "trust", config.load(user.home).trust.add(author.peer_id, ["inject"]).to_config())
    trusted = generate.generate(user.store, user.gate(fresh=True), user.perf, loaded, prompt,
                                generate.Options(max_new_tokens=3))
    assert trusted.reused == 40 and trusted.cube_id == cube.cube_id and trusted.source == "local"
    assert trusted.new_ids == refused.new_ids and "not trusted" not in trusted.decision

    own = generate.generate(author.store, author.gate(), author.perf, loaded, prompt, options)
    assert own.reused == 40  # the author trusts itself
    record, new = revocations.revoke(author.publisher, cube.cube_id, "stale")
    assert new
    after = generate.generate(author.store, author.gate(), author.perf, loaded, prompt, options)
    assert after.reused == 0 and not author.store.has(cube.cube_id)  # revoked: dropped, only the record stays
    # a revocation reaching the user's store (checked against the manifest's author) stops it there too
    revocations.accept(user.store, record, cube.cube_id, cube.manifest.author)
    gone = generate.generate(user.store, user.gate(fresh=True), user.perf, loaded, prompt,
                             generate.Options(max_new_tokens=3))
    assert gone.reused == 0 and not user.store.has(cube.cube_id) and revocations.is_revoked(user.store, cube.cube_id)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_activation_refuses_untrusted_and_revoked_adapters(tmp_path, models, tiny_model_dir):
    from memnet.model import loader, lora
    from tests.test_lora import peft_adapter

    author, user = home.init(tmp_path / "author"), home.init(tmp_path / "user")
    model = author.models.pin(str(tiny_model_dir))[0]
    loaded = loader.load(model)
    adapter = lora.import_adapter(author.publisher, peft_adapter(loaded, tmp_path / "adapter", seed=1), model).cube_id
    local.export(author.store, [adapter], tmp_path / "lora.car")
    local.import_archive(user.store, tmp_path / "lora.car")
    try:
        with pytest.raises(PolicyError, match=f"author {author.peer_id} is not trusted"):
            lora.activate(user.store, user.gate(), loaded, [(adapter, 1.0)])
        assert "peft" not in loaded.adapters  # refused before the model was touched
        assert lora.activate(author.store, author.gate(), loaded, [(adapter, 1.0)]) is not None
        lora.activate(author.store, author.gate(), loaded, [])
        revocations.revoke(author.publisher, adapter)
        with pytest.raises(PolicyError, match="revoked"):
            lora.activate(author.store, author.gate(), loaded, [(adapter, 1.0)])
    finally:
        lora.activate(author.store, author.gate(), loaded, [])


def test_audit_records_generations_and_lists_them(tmp_path, models, tiny_model_dir, capsys):
    from memnet.model import generate, loader

    node = home.init(tmp_path / "home")
    loaded = loader.load(node.models.pin(str(tiny_model_dir))[0])
    text = " ".join(f"memory {i} is content addressed" for i in range(12))
    cube, _ = generate.build(node.publisher, node.perf, loaded, loaded.encode(text), "float32")
    result = api.generate(text + " and so on", home=node, max_new_tokens=2, swarm=False)
    assert result.reused > 0
    audit.record_answer(node.store, kind="ask", prompt_ids_or_text_digest="what did I note?", answer_digest=b"\x01" * 32,
                        cubes=[{"cid": CUBE, "kind": "plaintext", "author": B, "role": "plaintext",
                                "source": "peer"}], extra={"score": 0.5, "none": None})
    logged = audit.entries(node.store)
    assert [e["kind"] for e in logged] == ["generate", "ask"]
    first = logged[0]
    assert first["preview"] == (text + " and so on")[:audit.PREVIEW]
    assert first["prompt"] == audit.digest(loaded.encode(text + " and so on"))
    assert first["answer"] == audit.digest(result.text)
    assert first["cubes"] == [{"cid": cube.cube_id, "kind": "activation", "author": node.author, "role": "kv",
                               "source": "local"}]
    assert first["extra"]["reused"] == result.reused
    assert logged[1]["extra"] == {"score": "0.5"} and logged[1]["preview"] == "what did I note?"
    assert audit.entries(node.store, last=1) == logged[1:]

    code, out, _ = cli(capsys, node.home, "audit", "--json")
    listed = json.loads(out)
    assert code == 0 and listed[1]["cubes"][0] == {"cid": cid.to_text(CUBE), "kind": "plaintext",
                                                   "author": keys.peer_id(B), "role": "plaintext", "source": "peer"}
    assert listed[0]["answer_sha256"] == audit.digest(result.text).hex()
    code, out, err = cli(capsys, node.home, "audit", "--last", "1")
    assert code == 0 and "what did I note?" in out and "plaintext" in out and "1 answer(s)" in err
    one_line_error(cli(capsys, node.home, "audit", "--last", "0"), "--last")
    with pytest.raises(UsageError, match="role"):
        audit.record_answer(node.store, kind="ask", prompt_ids_or_text_digest="q", answer_digest="a",
                            cubes=[{"cid": CUBE, "kind": "plaintext", "author": B, "role": "boss"}])
    assert audit.prune(node.store, keep=1) == 1 and len(audit.entries(node.store)) == 1


def test_upkeep_cuts_the_audit_log_to_audit_keep(tmp_path, capsys):
    node = home.init(tmp_path / "home")
    for i in range(5):
        audit.record_answer(node.store, kind="ask", prompt_ids_or_text_digest=f"question {i}", answer_digest="a",
                            cubes=[])
    written = json.loads((node.home / "config.json").read_text())
    (node.home / "config.json").write_text(json.dumps({**written, "audit_keep": 2}))
    code, out, _ = cli(capsys, node.home, "upkeep", "--dry-run")
    assert code == 0 and "would prune 3 audit entries (audit_keep 2)" in out
    assert len(audit.entries(node.store)) == 5  # a dry run changes nothing
    code, out, _ = cli(capsys, node.home, "upkeep", "--json")
    assert code == 0 and json.loads(out)["audit_pruned"] == 3
    assert [e["preview"] for e in audit.entries(node.store)] == ["question 3", "question 4"]  # the newest stay
    code, out, _ = cli(capsys, node.home, "upkeep", "--json")
    assert json.loads(out)["audit_pruned"] == 0
    (node.home / "config.json").write_text(json.dumps({**written, "audit_keep": 0}))
    one_line_error(cli(capsys, node.home, "upkeep"), "audit_keep")


# -- quotas ----------------------------------------------------------------------------------------

def test_rolling_quota_counts_volume_over_the_window_and_prunes_idle_peers():
    quota = RollingQuota(1000, window=60, slots=6)  # 10 s slots
    quota.add("p", 600, 0.0)
    assert not quota.exceeded("p", 1.0)
    quota.add("p", 500, 15.0)
    assert quota.exceeded("p", 20.0) and quota.used("p", 20.0) == 1100
    assert quota.exceeded("p", 59.0)
    assert not quota.exceeded("p", 61.0) and quota.used("p", 61.0) == 500  # the first slot rolled out
    quota.add("q", 1, 61.0)
    assert len(quota) == 2 and quota.prune(80.0) == 1 and len(quota) == 1  # p's last bytes left at 75 s
    assert quota.prune(200.0) == 1 and len(quota) == 0
    unlimited = RollingQuota(0)
    unlimited.add("p", 10**12, 0.0)
    assert not unlimited.exceeded("p", 0.0) and len(unlimited) == 0


def test_quota_and_check_interval_settings():
    daemon = config.parse({"daemon": {"revocation_check_interval": 1,
                                      "limits": {"quota_bytes_per_hour": 0}}}).daemon
    assert daemon.revocation_check_interval == 1 and daemon.limits.quota_bytes_per_hour == 0
    assert config.parse({}).daemon.limits.quota_bytes_per_hour == 4 * 2**30
    for bad in (0, 1.5, True, "60"):
        with pytest.raises(HomeError, match="revocation_check_interval"):
            config.parse({"daemon": {"revocation_check_interval": bad}})
    with pytest.raises(HomeError, match="quota_bytes_per_hour"):
        config.parse({"daemon": {"limits": {"quota_bytes_per_hour": -1}}})


def test_token_bucket_is_idle_once_refilled():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert bucket.idle(0.0) and bucket.try_take(5, 0.0) and not bucket.idle(0.1)
    assert bucket.idle(0.5) and TokenBucket(0, 0, 0.0).idle(0.0)


def test_server_refuses_chunks_beyond_the_quota_and_the_fetcher_moves_on(tmp_path):
    from memnet.net.client import MipSession
    from memnet.net.fetch import fetch_cube
    from memnet.net.peer_scores import PeerScores
    from tests.test_mip_server import providers, run

    cube = factories.plaintext_cube(texts=[f"item {i}: " + "memory " * 300 for i in range(4)], chunk_size=1024)
    stores = [Store(str(tmp_path / name)) for name in ("open", "capped", "mine")]
    for s in stores[:2]:
        s.put(cube)
    ids = list(cube.manifest.chunks)

    async def scenario():
        async with providers(stores[0], stores[1], ServeLimits(quota_bytes_per_hour=2048)) as (c, infos, servers):
            session = await MipSession.open(c, infos[1].peer_id)
            got = [d async for _, d in session.chunks(cube.cube_id, ids[:4])]  # under the quota when asked
            assert len(got) == 4 and servers[1].served_bytes == 4096
            with pytest.raises(PeerError, match="quota"):
                [d async for _, d in session.chunks(cube.cube_id, ids[4:5])]
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes  # manifests do not count

            async def find():
                return infos
            report = await fetch_cube(c, stores[2], cube.cube_id, find, scores=PeerScores())
            assert stores[2].read_payload(cube.cube_id) == cube.payload()
            capped = str(infos[1].peer_id)
            assert capped not in report.bytes_from and servers[1].served_bytes == 4096
            assert "quota" in report.dropped.get(capped, "quota")  # dropped for it, if it was asked at all
    try:
        run(scenario)
    finally:
        for s in stores:
            s.close()


def test_server_forgets_the_state_of_idle_peers(tmp_path):
    from trio.testing import MockClock

    from memnet.net.client import MipSession
    from memnet.net.host import build_host
    from memnet.net.server import PRUNE_EVERY
    from tests.test_mip_server import LOCAL, pair

    store = Store(str(tmp_path / "store"))
    cube = factories.plaintext_cube()
    store.put(cube)
    clock = MockClock(rate=1.0)

    async def scenario():
        async with pair(store, ServeLimits(quota_bytes_per_hour=10**6)) as (a, b, server):
            session = await MipSession.open(b, a.get_id())
            assert [d async for _, d in session.chunks(cube.cube_id, list(cube.manifest.chunks))]
            await session.close()
            first = str(b.get_id())
            assert first in server._requests and len(server._quota) == 1
            clock.jump(PRUNE_EVERY + 1)  # b's buckets refill; its bytes stay in the hour's window
            c = build_host(factories.key("another peer"))
            async with c.run(LOCAL):
                await c.connect(PeerInfo(a.get_id(), a.get_addrs()))
                other = await MipSession.open(c, a.get_id())
                assert await other.manifest(cube.cube_id) == cube.manifest_bytes
                assert set(server._requests) == {str(c.get_id())} and len(server._quota) == 1
                await other.close()
            clock.jump(3600)  # now b's bytes have rolled out of the window too
            again = await MipSession.open(b, a.get_id())
            assert await again.manifest(cube.cube_id) == cube.manifest_bytes
            assert set(server._requests) == {first} and len(server._quota) == 0

    try:
        trio.run(scenario, clock=clock)
    finally:
        store.close()


def test_server_never_serves_a_revoked_cube(tmp_path):
    from memnet.net.client import MipSession
    from tests.test_mip_server import pair, run

    store = Store(str(tmp_path / "store"))
    plain = factories.plaintext_cube(ALICE)
    kv_cube = factories.activation_cube(ALICE)
    store.put_many([plain, kv_cube], "fetched")
    key = kv_cube.manifest.meta["prefix_keys"][0]

    async def scenario():
        async with pair(store) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            assert await session.prefix(key) == [kv_cube.cube_id]
            # a chunk is served only as part of the cube the request names (finding 4: naming a
            # servable cube must not get another cube's chunks, a revoked one's included)
            plain_chunks = list(plain.manifest.chunks)
            got = [d async for _, d in session.chunks(kv_cube.cube_id, plain_chunks)]
            assert got == [None] * len(plain_chunks)
            with pytest.raises(PeerError, match="not_found"):
                [d async for _, d in session.chunks(cid.cid_of(b"a cube nobody holds"), plain_chunks)]
            session = await MipSession.open(b, a.get_id())
            for cube in (plain, kv_cube):
                revocations.accept(store, revocation.sign(ALICE, cube.cube_id, NOW), cube.cube_id, A)
            with pytest.raises(PeerError, match="revoked"):
                await session.manifest(plain.cube_id)
            with pytest.raises(PeerError, match="revoked"):
                await session.have(plain.cube_id, len(plain.manifest.chunks))
            with pytest.raises(PeerError, match="revoked"):
                [d async for _, d in session.chunks(plain.cube_id, list(plain.manifest.chunks))]
            assert await session.prefix(key) == []
        # a revocation drops the cube's data too; only the record stays
        assert not store.has(plain.cube_id) and not store.has(kv_cube.cube_id)
        assert store.usage()["chunks"] == 0 and revocations.is_revoked(store, plain.cube_id)
    try:
        run(scenario)
    finally:
        store.close()


# -- a real swarm ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_revocation_reaches_a_peer_that_then_stops_serving(tmp_path):
    """A publishes, B fetches (and provides) it, A revokes: B learns it from the DHT within its
    check interval, keeps the record, unpins the cube and its MIP server answers `revoked`."""
    from memnet.net.client import MipSession
    from memnet.net.host import build_host, peer_info

    started = time.monotonic()
    swarm = Swarm(tmp_path)
    try:
        a = swarm.start("a")
        b_home = swarm.home("b")
        written = json.loads((b_home / "config.json").read_text())
        written["daemon"] = {"revocation_check_interval": 1}
        (b_home / "config.json").write_text(json.dumps(written))
        b = swarm.start("b", bootstrap=[a])
        text = memnet(a.home, "publish", str(notes_file(tmp_path / "notes.txt", 20_000))).out.strip()
        cube_id = cid.from_text(text)
        deadline = time.monotonic() + 20
        while (got := b.cli("get", text, check=False)).code != 0:  # A's provider record is on its way
            assert time.monotonic() < deadline, got.err
            time.sleep(0.3)
        assert json.loads(b.cli("show", text, "--json").out)["pin"]["reason"] == "fetched"

        assert "published to the swarm" in a.cli("revoke", text, "--reason", "retracted").out
        key = revocations.TABLE.encode() + b"\x00" + cube_id
        deadline = time.monotonic() + 15
        while key not in stored(b.home, "records"):
            assert time.monotonic() < deadline, b.log_text()[-3000:]
            time.sleep(0.3)
        record = revocation.decode(stored(b.home, "records")[key])
        assert record.author == keys.author_from_peer_id(a.peer_id) and record.reason == "retracted"
        assert b.cli("show", text, check=False).code != 0  # dropped: only the record stays
        refused = b.cli("get", text, check=False)
        assert refused.code != 0 and "revoked by its author" in refused.err

        async def ask(addr: str) -> str:
            """What a third peer gets when it asks addr for the cube's manifest over MIP."""
            host = build_host(factories.key("third"))
            with trio.fail_after(15):
                async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                    info = peer_info(addr)
                    await host.connect(info)
                    session = await MipSession.open(host, info.peer_id)
                    try:
                        await session.manifest(cube_id)
                        return "served"
                    except PeerError as exc:
                        return str(exc)

        for node in (a, b):
            assert "revoked" in trio.run(ask, node.addr)
        assert time.monotonic() - started < 45
    finally:
        swarm.close()
