"""A node's settings: config.json parsed once into frozen, typed sections (sections.py), checked
key by key (checks.py, parse.py), read and written by file.py alone."""

from memnet.config import file
from memnet.config.file import CONFIG_FILE, load, read_raw, update, write_raw
from memnet.config.parse import SETTINGS, UNSET, changed, effective, lookup, parse, value_of, with_value
from memnet.config.sections import (PROVIDER_RECORD_EXPIRY, AskSettings, Config, ConsolidationSettings, DaemonSettings, FetchTuning,
                                    HivemindSettings, HttpSettings, Lifecycle, NatSettings, RelayLimits, ServeLimits)

__all__ = ["CONFIG_FILE", "file", "SETTINGS", "UNSET", "AskSettings", "Config", "ConsolidationSettings", "DaemonSettings", "FetchTuning",
           "HivemindSettings", "HttpSettings", "Lifecycle", "NatSettings", "RelayLimits", "ServeLimits", "changed", "effective", "load", "lookup", "parse", "read_raw",
           "update", "value_of", "with_value", "write_raw", "PROVIDER_RECORD_EXPIRY"]
