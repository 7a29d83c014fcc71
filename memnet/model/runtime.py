"""One place that imports torch/transformers, offline and quiet, with a fixed thread count."""

from __future__ import annotations

import logging
import os
import warnings

# no hub access, ever: a model comes from a local folder or not at all
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. the GGUF reader's own bar; memnet draws with rich

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="transformers")
warnings.filterwarnings("ignore", module="peft")


def set_threads(n: int | None = None) -> None:
    """Use every core by default; MEMNET_THREADS overrides (benchmarks pin it)."""
    n = n or int(os.environ.get("MEMNET_THREADS", "0")) or (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


__all__ = ["torch", "transformers", "set_threads"]
