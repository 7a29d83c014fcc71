"""Loading a pinned model for inference (fp32, eval mode, offline), once per process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from memnet.errors import UsageError
from memnet.model.pinned import PinnedModel


@dataclass
class LoadedModel:
    pinned: PinnedModel
    model: Any          # transformers PreTrainedModel (or a peft wrapper of it)
    tokenizer: Any
    load_seconds: float
    adapters: dict[str, Any] = field(default_factory=dict)

    @property
    def max_tokens(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise UsageError(f"model {self.pinned.name} has no chat template")
        ids = self.tokenizer.apply_chat_template(messages, tokenize=True,
                                                 add_generation_prompt=add_generation_prompt)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


_loaded: dict[bytes, LoadedModel] = {}


def load(pinned: PinnedModel) -> LoadedModel:
    if pinned.fingerprint in _loaded:
        return _loaded[pinned.fingerprint]
    from memnet.model import attention, small_gemm
    from memnet.model.runtime import set_threads, torch, transformers

    set_threads()
    start = time.perf_counter()
    folder = str(pinned.folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True, local_files_only=True,
        attn_implementation=attention.NAME)
    model.eval()
    small_gemm.install(model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    _warm_up(model, torch)
    loaded = LoadedModel(pinned, model, tokenizer, time.perf_counter() - start)
    _loaded[pinned.fingerprint] = loaded
    return loaded


def forget(pinned: PinnedModel) -> None:
    """Drop this process's loaded copy (the memory returns once no caller holds it)."""
    _loaded.pop(pinned.fingerprint, None)


def _warm_up(model: Any, torch: Any) -> None:
    """Run the two paths generation takes (a prefill, then tokens on top of its cache) once on a
    few tokens: a process's first forward pays one-time kernel and allocator set-up (0.3-4 s
    here), which belongs to loading, not to the first answer's time to first token (nor to the
    prefill rate this node records for its fetch-or-recompute decisions)."""
    with torch.inference_mode():
        first = model(input_ids=torch.zeros((1, 8), dtype=torch.long), use_cache=True)
        model(input_ids=torch.zeros((1, 4), dtype=torch.long), past_key_values=first.past_key_values,
              position_ids=torch.arange(8, 12).unsqueeze(0), use_cache=True)
