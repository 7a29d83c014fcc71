"""One typed config (memnet/config): config.json parsed into frozen sections, every bad setting a
one-line ConfigError naming the key; command-line overrides checked like the file's settings;
`memnet config show/get/set/unset`."""

from __future__ import annotations

import json
import stat

import pytest

from memnet import config
from memnet.config import PROVIDER_RECORD_EXPIRY, DaemonSettings, FetchTuning, ServeLimits
from memnet.errors import ConfigError, HomeError, MemnetError, UsageError
from tests.cli_helpers import memnet

BOOT = "/ip4/10.0.0.1/tcp/4737/p2p/12D3KooWRdFFg3yTbTsDq5Z1yCvCWbqznEFro9jeVivo7rkayJ4D"


def daemon_of(raw: dict, **overrides) -> DaemonSettings:
    """The daemon section of raw, with command-line style overrides ({dotted key: value})."""
    for key, value in overrides.items():
        if value is not None:
            raw = config.with_value(raw, key, value)
    return config.parse(raw).daemon


def refused(raw: dict, **overrides) -> str:
    with pytest.raises(HomeError) as info:
        daemon_of(raw, **overrides)
    message = str(info.value)
    assert message and "\n" not in message
    assert message.startswith("config.json:") or message.startswith("no setting")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, UsageError)
    return message


# -- good settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [{}, {"daemon": {}}, {"daemon": None}])
def test_defaults(raw):
    cfg = daemon_of(raw)
    assert cfg == DaemonSettings()
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/4737",)
    assert cfg.bootstrap == ()
    assert cfg.mdns is False and cfg.provide_fetched is True
    assert cfg.reprovide_interval == 4 * 3600 < PROVIDER_RECORD_EXPIRY
    assert cfg.limits == ServeLimits() and cfg.fetch == FetchTuning()


def test_settings_from_config_json():
    cfg = daemon_of({"daemon": {
        "listen": ["/ip4/127.0.0.1/tcp/5000", "/ip6/::1/tcp/5000"],
        "bootstrap": [BOOT],
        "mdns": True, "provide_fetched": False, "reprovide_interval": 3600,
    }})
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/5000", "/ip6/::1/tcp/5000")
    assert isinstance(cfg.listen, tuple) and isinstance(cfg.bootstrap, tuple)
    assert cfg.bootstrap == (BOOT,)
    assert cfg.mdns is True and cfg.provide_fetched is False and cfg.reprovide_interval == 3600


def test_overrides_win_and_none_means_not_given(tmp_path):
    raw = {"daemon": {"listen": ["/ip4/127.0.0.1/tcp/5000"], "mdns": True}}
    cfg = daemon_of(raw, **{"daemon.listen": ["/ip4/127.0.0.1/tcp/6000"], "daemon.mdns": None,
                            "daemon.bootstrap": None})
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/6000",)
    assert cfg.mdns is True      # None: keep the config.json value
    assert cfg.bootstrap == ()
    assert raw == {"daemon": {"listen": ["/ip4/127.0.0.1/tcp/5000"], "mdns": True}}  # not mutated
    assert daemon_of({}, **{"daemon.mdns": True}).mdns is True
    # config.load applies the same overrides to the file's settings
    (tmp_path / "config.json").write_text(json.dumps(raw))
    loaded = config.load(tmp_path, {"daemon.listen": ["/ip4/127.0.0.1/tcp/7000"], "daemon.mdns": None})
    assert loaded.daemon.listen == ("/ip4/127.0.0.1/tcp/7000",) and loaded.daemon.mdns is True


def test_nested_limits_and_fetch():
    cfg = daemon_of({"daemon": {
        "limits": {"streams_per_peer": 3, "requests_per_s": 1.5, "request_burst": 2,
                   "peer_bytes_per_s": 1_000_000, "idle_timeout": 5},
        "fetch": {"streams_per_peer": 2, "chunks_per_request": 8},
    }})
    assert cfg.limits == ServeLimits(streams_per_peer=3, requests_per_s=1.5, request_burst=2,
                                     peer_bytes_per_s=1_000_000, idle_timeout=5)
    assert cfg.limits.frame_timeout == ServeLimits().frame_timeout  # unnamed limits keep defaults
    assert cfg.fetch == FetchTuning(streams_per_peer=2, chunks_per_request=8)
    # zero is allowed where it means "no cap"
    assert daemon_of({"daemon": {"limits": {"upload_bytes_per_s": 0}}}).limits.upload_bytes_per_s == 0


@pytest.mark.parametrize("count", [0, 1, 64])
def test_prefix_neighbours_from_none_to_the_cap(count):
    assert DaemonSettings().prefix_neighbours == 8
    assert daemon_of({"daemon": {"prefix_neighbours": count}}).prefix_neighbours == count


def test_reprovide_interval_just_below_record_expiry():
    assert daemon_of({"daemon": {"reprovide_interval": PROVIDER_RECORD_EXPIRY - 1}}) \
        .reprovide_interval == PROVIDER_RECORD_EXPIRY - 1


def test_whole_file_sections_and_ask_settings():
    cfg = config.parse({"ask": {"k": 2, "min_score": 0.5}, "promote_after": 5, "models_dir": "/srv/models",
                        "publish_promoted": False})
    assert cfg.ask == config.AskSettings(k=2, min_score=0.5, promote_after=5)  # promote_after is shared
    assert cfg.lifecycle.promote_after == 5
    assert cfg.models_dir == "/srv/models" and cfg.publish_promoted is False
    assert config.parse({}) == config.Config()


# -- bad settings ---------------------------------------------------------------------------------

def test_unknown_keys():
    assert "['colour', 'listn']" in refused({"daemon": {"listn": [], "colour": "red"}})
    assert "daemon.limits" in refused({"daemon": {"limits": {"streams": 3}}})
    assert "daemon.fetch" in refused({"daemon": {"fetch": {"batch": 3}}})
    assert "serve" in refused({"daemon": {"serve": {}}})  # not a setting
    assert "nonsense" in refused({}, nonsense=1)          # an override is checked like a setting
    assert "['other']" in refused({"other": {"x": 1}})   # unknown top-level keys too


@pytest.mark.parametrize("daemon, words", [
    ({"listen": "/ip4/127.0.0.1/tcp/1"}, "daemon.listen"),
    ({"listen": [1234]}, "daemon.listen"),
    ({"bootstrap": {"a": "b"}}, "daemon.bootstrap"),
    ({"bootstrap": ["/ip4/1.2.3.4/tcp/1", None]}, "daemon.bootstrap"),
    ({"limits": []}, "daemon.limits must be an object"),
    ({"limits": None}, "daemon.limits must be an object"),
    ({"fetch": "fast"}, "daemon.fetch must be an object"),
    ({"limits": {"requests_per_s": "200"}}, "daemon.limits.requests_per_s"),
    ({"limits": {"idle_timeout": None}}, "daemon.limits.idle_timeout"),
    ({"fetch": {"chunks_per_request": [4]}}, "daemon.fetch.chunks_per_request"),
    ({"reprovide_interval": "3600"}, "daemon.reprovide_interval"),
    ({"reprovide_interval": 3600.5}, "daemon.reprovide_interval"),
    ({"reprovide_interval": None}, "daemon.reprovide_interval"),
    ({"prefix_neighbours": "8"}, "daemon.prefix_neighbours"),
    ({"prefix_neighbours": 2.5}, "daemon.prefix_neighbours"),
    ({"prefix_neighbours": True}, "daemon.prefix_neighbours"),
])
def test_wrong_types(daemon, words):
    assert words in refused({"daemon": daemon})


@pytest.mark.parametrize("daemon, words", [
    ({"limits": {"streams_per_peer": -1}}, "daemon.limits.streams_per_peer"),
    ({"limits": {"peer_bytes_per_s": -0.5}}, "daemon.limits.peer_bytes_per_s"),
    ({"fetch": {"streams_per_peer": -4}}, "daemon.fetch.streams_per_peer"),
    ({"reprovide_interval": -60}, "daemon.reprovide_interval"),
    ({"reprovide_interval": 0}, "daemon.reprovide_interval"),
    ({"prefix_neighbours": -1}, "daemon.prefix_neighbours"),
    ({"prefix_neighbours": 65}, "daemon.prefix_neighbours"),
])
def test_negative_numbers(daemon, words):
    assert words in refused({"daemon": daemon})


@pytest.mark.parametrize("daemon, words", [
    ({"limits": {"streams_per_peer": True}}, "daemon.limits.streams_per_peer"),
    ({"limits": {"upload_bytes_per_s": False}}, "daemon.limits.upload_bytes_per_s"),
    ({"fetch": {"chunks_per_request": True}}, "daemon.fetch.chunks_per_request"),
])
def test_bool_instead_of_number(daemon, words):
    assert words in refused({"daemon": daemon})


@pytest.mark.parametrize("daemon, text", [
    ({"listen": ["/ip4/127.0.0.1/tcp/1", "not a multiaddr"]}, "not a multiaddr"),
    ({"listen": ["/ip4/999.0.0.1/tcp/1"]}, "/ip4/999.0.0.1/tcp/1"),
    ({"bootstrap": ["/ip4/10.0.0.1/tcp/4737"]}, "/ip4/10.0.0.1/tcp/4737"),    # no /p2p/PEERID
    ({"bootstrap": ["/ip4/10.0.0.1/tcp/4737/p2p/12D3KooWabc"]}, "12D3KooWabc"),  # bad PeerID
])
def test_bad_addresses(daemon, text):
    """Addresses are checked when the config is read: a one-line error naming the address."""
    with pytest.raises(MemnetError) as info:
        daemon_of({"daemon": daemon})
    assert text in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("seconds", [PROVIDER_RECORD_EXPIRY, PROVIDER_RECORD_EXPIRY + 1, 10**12])
def test_reprovide_interval_at_or_above_48_hours(seconds):
    assert "48 h" in refused({"daemon": {"reprovide_interval": seconds}})
    assert "48 h" in refused({}, **{"daemon.reprovide_interval": seconds})


@pytest.mark.parametrize("daemon", ["fast", [1], 7])
def test_daemon_setting_that_is_not_an_object(daemon):
    refused({"daemon": daemon})


@pytest.mark.parametrize("daemon", [{"mdns": "false"}, {"provide_fetched": "no"}, {"mdns": 1}])
def test_flags_that_are_not_booleans(daemon):
    refused({"daemon": daemon})


def test_reprovide_interval_bool():
    refused({"daemon": {"reprovide_interval": True}})


@pytest.mark.parametrize("daemon", [
    {"fetch": {"streams_per_peer": 1.5}},
    {"limits": {"streams_per_peer": 2.5}},
    {"fetch": {"chunks_per_request": 0}},
    {"limits": {"idle_timeout": float("nan")}},
])
def test_integer_and_positive_settings(daemon):
    refused({"daemon": daemon})


def test_upload_rate_override_lands_in_the_limits_and_is_checked():
    assert daemon_of({}, **{"daemon.limits.upload_bytes_per_s": 1e6}).limits.upload_bytes_per_s == 1e6
    assert "upload_bytes_per_s" in refused({}, **{"daemon.limits.upload_bytes_per_s": -5})


@pytest.mark.parametrize("raw, words", [
    ({"config_version": 99}, "config_version"),
    ({"config_version": "1"}, "config_version"),
    ({"chunk_size": 100}, "chunk_size"),
    ({"chunk_size": 2**30}, "chunk_size"),
    ({"models_dir": 7}, "models_dir"),
    ({"models_dir": ""}, "models_dir"),
    ({"publish_promoted": "yes"}, "publish_promoted"),
    ({"ask": {"k": 0}}, "ask.k"),
    ({"ask": {"min_score": "high"}}, "ask.min_score"),
    ({"ask": {"min_score": 1.5}}, "ask.min_score"),
    ({"ask": {"colour": 1}}, "unknown ask"),
    ({"ask": []}, "ask must be an object"),
    ({"trust": {"inject": "self"}}, "trust.inject"),
])
def test_every_section_refuses_bad_values_in_one_line(raw, words):
    with pytest.raises(ConfigError) as info:
        config.parse(raw)
    assert words in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 300


def test_not_an_object_and_not_json(tmp_path):
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        config.parse([1, 2])
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load(tmp_path)
    (tmp_path / "config.json").write_text(" " * (config.file.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        config.load(tmp_path)


# -- keys, changes, writing ------------------------------------------------------------------------

def test_every_setting_has_a_key_a_doc_and_its_default_in_force():
    defaults = config.effective(config.Config())
    assert set(defaults) == set(config.SETTINGS) and len(defaults) >= 30
    assert defaults["daemon.limits.idle_timeout"] == 60.0 and defaults["promote_after"] == 2
    assert all(s.doc for s in config.SETTINGS.values())
    restart = {k for k, s in config.SETTINGS.items() if not s.live}
    assert restart == {"config_version", "daemon.listen", "daemon.bootstrap", "daemon.mdns", "daemon.dht_query_timeout"} | \
        {k for k in config.SETTINGS if k.startswith(("hivemind.", "http."))} | \
        {"nat.announce", "nat.upnp", "nat.serve_probes", "nat.relay", "nat.hole_punch", "nat.dht_client_when_private"} | \
        {k for k in config.SETTINGS if k.startswith("nat.relay_limits.")}  # their processes/threads/services take them at start


def test_changed_names_the_differing_settings():
    old = config.parse({})
    new = config.parse({"daemon": {"mdns": True, "limits": {"idle_timeout": 5}}, "eviction": "lfu"})
    assert sorted(s.key for s in config.changed(old, new)) == ["daemon.limits.idle_timeout", "daemon.mdns", "eviction"]
    assert config.changed(new, new) == []


def test_update_checks_before_writing_and_keeps_the_file_private(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"chunk_size": 1024, "eviction": "lfu"}))
    before, after = config.update(tmp_path, "daemon.limits.idle_timeout", 5)
    assert before.daemon.limits.idle_timeout == 60.0 and after.daemon.limits.idle_timeout == 5
    written = json.loads((tmp_path / "config.json").read_text())
    assert written == {"chunk_size": 1024, "eviction": "lfu", "daemon": {"limits": {"idle_timeout": 5}}}
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600
    text = (tmp_path / "config.json").read_text()
    for key, value in (("daemon.limits.idle_timeout", -1), ("eviction", "fifo"), ("no.such", 1),
                       ("daemon", {}), ("config_version", 2)):
        with pytest.raises(ConfigError):
            config.update(tmp_path, key, value)
        assert (tmp_path / "config.json").read_text() == text  # refused: nothing written
    config.update(tmp_path, "eviction", config.UNSET)
    assert "eviction" not in json.loads((tmp_path / "config.json").read_text())
    assert config.load(tmp_path).lifecycle.eviction == "lru"
    config.update(tmp_path, "daemon.mdns", config.UNSET)  # unsetting what is not set: no change


# -- memnet config ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_config_cli(tmp_path):
    home = tmp_path / "home"
    assert memnet(home, "init").code == 0
    assert memnet(home, "config", "set", "promote_after", "5").code == 0
    got = memnet(home, "config", "get", "promote_after")
    assert got.code == 0 and got.out.strip() == "5"
    assert memnet(home, "config", "set", "store_budget_bytes", "1 GiB").code == 0
    assert memnet(home, "config", "get", "store_budget_bytes").out.strip() == str(2**30)
    assert memnet(home, "config", "set", "daemon.listen", '["/ip4/127.0.0.1/tcp/0"]').code == 0
    shown = json.loads(memnet(home, "config", "show", "--json").out)
    assert shown["promote_after"] == 5 and shown["daemon.listen"] == ["/ip4/127.0.0.1/tcp/0"]
    table = memnet(home, "config", "show").out
    assert "daemon.limits.idle_timeout" in table and "restart" in table
    assert memnet(home, "config", "unset", "promote_after").code == 0
    assert memnet(home, "config", "get", "promote_after").out.strip() == "2"
    before = (home / "config.json").read_text()
    for args, words in ((("set", "daemon.limits.idle_timeout", "-3"), "idle_timeout"),
                        (("set", "nosuch", "1"), "no setting"),
                        (("set", "daemon", "{}"), "it is a section"),
                        (("get", "daemon.limits"), "it is a section"),
                        (("set", "eviction", "fifo"), "eviction")):
        result = memnet(home, "config", *args, check=False)
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result
    assert (home / "config.json").read_text() == before
