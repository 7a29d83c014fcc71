"""DaemonConfig.from_config (memnet/daemon/config.py): config.json's "daemon" object plus command-line
overrides; every bad setting is a HomeError with a one-line message."""

from __future__ import annotations

import pytest

from memnet.daemon.config import PROVIDER_RECORD_EXPIRY, DaemonConfig
from memnet.errors import HomeError, MemnetError
from memnet.net.fetch import FetchTuning
from memnet.net.server import ServeLimits


BOOT = "/ip4/10.0.0.1/tcp/4737/p2p/12D3KooWRdFFg3yTbTsDq5Z1yCvCWbqznEFro9jeVivo7rkayJ4D"


def refused(config: dict, **overrides) -> str:
    with pytest.raises(HomeError) as info:
        DaemonConfig.from_config(config, **overrides)
    message = str(info.value)
    assert message and "\n" not in message
    assert message.startswith("config.json:")
    return message


# -- good settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [{}, {"daemon": {}}, {"daemon": None}, {"other": {"x": 1}}])
def test_defaults(config):
    cfg = DaemonConfig.from_config(config)
    assert cfg == DaemonConfig()
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/4737",)
    assert cfg.bootstrap == ()
    assert cfg.mdns is False and cfg.provide_fetched is True
    assert cfg.reprovide_interval == 22 * 3600 < PROVIDER_RECORD_EXPIRY
    assert cfg.serve == ServeLimits() and cfg.fetch == FetchTuning()


def test_settings_from_config_json():
    cfg = DaemonConfig.from_config({"daemon": {
        "listen": ["/ip4/127.0.0.1/tcp/5000", "/ip6/::1/tcp/5000"],
        "bootstrap": [BOOT],
        "mdns": True, "provide_fetched": False, "reprovide_interval": 3600,
    }})
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/5000", "/ip6/::1/tcp/5000")
    assert isinstance(cfg.listen, tuple) and isinstance(cfg.bootstrap, tuple)
    assert cfg.bootstrap == (BOOT,)
    assert cfg.mdns is True and cfg.provide_fetched is False and cfg.reprovide_interval == 3600


def test_overrides_win_and_none_means_not_given():
    config = {"daemon": {"listen": ["/ip4/127.0.0.1/tcp/5000"], "mdns": True}}
    cfg = DaemonConfig.from_config(config, listen=["/ip4/127.0.0.1/tcp/6000"], mdns=None,
                                   bootstrap=None)
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/6000",)
    assert cfg.mdns is True      # None: keep the config.json value
    assert cfg.bootstrap == ()
    assert config == {"daemon": {"listen": ["/ip4/127.0.0.1/tcp/5000"], "mdns": True}}  # not mutated
    assert DaemonConfig.from_config({}, mdns=True).mdns is True


def test_nested_limits_and_fetch():
    cfg = DaemonConfig.from_config({"daemon": {
        "limits": {"streams_per_peer": 3, "requests_per_s": 1.5, "request_burst": 2,
                   "peer_bytes_per_s": 1_000_000, "idle_timeout": 5},
        "fetch": {"streams_per_peer": 2, "chunks_per_request": 8},
    }})
    assert cfg.serve == ServeLimits(streams_per_peer=3, requests_per_s=1.5, request_burst=2,
                                    peer_bytes_per_s=1_000_000, idle_timeout=5)
    assert cfg.serve.frame_timeout == ServeLimits().frame_timeout  # unnamed limits keep defaults
    assert cfg.fetch == FetchTuning(streams_per_peer=2, chunks_per_request=8)
    # zero is allowed where it means "no cap"
    assert DaemonConfig.from_config({"daemon": {"limits": {"upload_bytes_per_s": 0}}}).serve.upload_bytes_per_s == 0


@pytest.mark.parametrize("count", [0, 1, 64])
def test_prefix_neighbours_from_none_to_the_cap(count):
    assert DaemonConfig().prefix_neighbours == 8
    assert DaemonConfig.from_config({"daemon": {"prefix_neighbours": count}}).prefix_neighbours == count


def test_reprovide_interval_just_below_record_expiry():
    assert DaemonConfig.from_config({"daemon": {"reprovide_interval": PROVIDER_RECORD_EXPIRY - 1}}) \
        .reprovide_interval == PROVIDER_RECORD_EXPIRY - 1


# -- bad settings ---------------------------------------------------------------------------------

def test_unknown_keys():
    assert "['colour', 'listn']" in refused({"daemon": {"listn": [], "colour": "red"}})
    assert "daemon.limits" in refused({"daemon": {"limits": {"streams": 3}}})
    assert "daemon.fetch" in refused({"daemon": {"fetch": {"batch": 3}}})
    assert "serve" in refused({"daemon": {"serve": {}}})  # the dataclass field name is not a setting
    assert "nonsense" in refused({}, nonsense=1)          # an override is checked like a setting


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
    """Addresses are checked when the config is read (a one-line memnet error naming the address;
    today a UsageError from memnet.net.host rather than a config.json HomeError)."""
    with pytest.raises(MemnetError) as info:
        DaemonConfig.from_config({"daemon": daemon})
    assert text in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("seconds", [PROVIDER_RECORD_EXPIRY, PROVIDER_RECORD_EXPIRY + 1, 10**12])
def test_reprovide_interval_at_or_above_48_hours(seconds):
    assert "48 h" in refused({"daemon": {"reprovide_interval": seconds}})
    assert "48 h" in refused({}, reprovide_interval=seconds)


# -- types that must be refused ---------------------------------------------------------------

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
    assert DaemonConfig.from_config({}, upload_rate=1e6).serve.upload_bytes_per_s == 1e6
    assert "upload_bytes_per_s" in refused({}, upload_rate=-5)


def test_allocator_settings_apply_on_glibc():
    import platform

    from memnet.daemon import allocator

    applied = allocator.tune()
    if platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False
