"""Fingerprints of what a model computes: its weights, config and tokenizer (sha256, 32 bytes).

The model fingerprint covers the weights actually run (the normalised fp32 safetensors of a
pinned folder, hashed tensor by tensor in name order, so file layout does not matter), the config
and the tokenizer. A KV cube or LoRA made under one fingerprint is never used under another.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from pathlib import Path
from typing import Any

from memnet.cube.payloads import canonical_json
from memnet.cube.safetensors_header import parse_header
from memnet.errors import FormatError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# config fields that record where or with what a folder was written, not what it computes
VOLATILE_CONFIG = ("transformers_version", "_name_or_path")
# tokenizer_config fields that change the ids a text becomes
TOKENIZER_FIELDS = ("add_bos_token", "add_eos_token", "bos_token", "eos_token", "chat_template",
                    "clean_up_tokenization_spaces", "model_max_length")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except ValueError:
        raise FormatError(f"{path}: invalid JSON") from None


def config_digest(folder: Path) -> bytes:
    config = _json(folder / CONFIG_FILE)
    if not isinstance(config, dict):
        raise FormatError(f"{folder / CONFIG_FILE}: expected a JSON object")
    kept = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG}
    return hashlib.sha256(b"memnet/config/v1\x00" + canonical_json(kept).encode()).digest()


def tokenizer_fingerprint(folder: Path) -> bytes:
    """tokenizer.json (vocabulary, merges, normaliser, pre-tokeniser, added tokens) plus the
    tokenizer_config fields and chat template that decide which ids a text or chat becomes."""
    vocab = _json(folder / TOKENIZER_FILE)
    settings = _json(folder / TOKENIZER_CONFIG_FILE) if (folder / TOKENIZER_CONFIG_FILE).exists() else {}
    if not isinstance(settings, dict):
        raise FormatError(f"{folder / TOKENIZER_CONFIG_FILE}: expected a JSON object")
    kept = {k: settings[k] for k in TOKENIZER_FIELDS if k in settings}
    template = folder / CHAT_TEMPLATE_FILE
    if template.exists():
        kept["chat_template"] = template.read_text(encoding="utf-8")
    doc = {"tokenizer": vocab, "settings": kept}
    return hashlib.sha256(b"memnet/tokenizer/v1\x00" + canonical_json(doc).encode()).digest()


def weights_digest(path: Path) -> bytes:
    """Each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(b"memnet/weights/v1\x00")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header = parse_header(data)
        with memoryview(data) as view:  # released before the mmap closes
            for name in sorted(header.tensors):
                info = header.tensors[name]
                digest.update(canonical_json([name, info.dtype, list(info.shape)]).encode() + b"\x00")
                digest.update(view[header.data_start + info.start:header.data_start + info.end])
    return digest.digest()


def model_fingerprint(folder: Path, tokenizer: bytes | None = None) -> bytes:
    tokenizer = tokenizer or tokenizer_fingerprint(folder)
    return hashlib.sha256(b"memnet/model/v1\x00" + weights_digest(folder / WEIGHTS_FILE)
                          + config_digest(folder) + tokenizer).digest()
