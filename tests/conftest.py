"""Shared fixtures: model folders built or converted once per test session."""

from __future__ import annotations

import os

import pytest

# one torch thread in tests: daemons and test processes share 2 cores, and OpenMP threads that
# wait on a busy core make a model step 2-5x slower (subprocesses inherit this)
os.environ.setdefault("MEMNET_THREADS", "1")

from memnet import home  # noqa: E402
from memnet.model import loader  # noqa: E402
from tests.model_factory import tiny_model_folder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with its own tokenizer, as a Hugging Face folder (pin it with
    memnet.model.node.models.pin(str(folder)))."""
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_models_dir(tmp_path_factory):
    """A models folder holding the real SmolLM2-135M, converted once per session (~25 s); tests
    share it through monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))."""
    from memnet.model.pinned import convert_smollm2

    root = tmp_path_factory.mktemp("models")
    convert_smollm2(root, say=lambda _: None, install=False)
    return root


@pytest.fixture()
def models(tmp_path_factory, monkeypatch):
    """An empty models folder of this test's own (MEMNET_MODELS points at it)."""
    root = tmp_path_factory.mktemp("models")
    monkeypatch.setenv("MEMNET_MODELS", str(root))
    return root


@pytest.fixture()
def node(tmp_path, models):
    """A fresh node home (test modules with other needs define their own node)."""
    return home.init(tmp_path / "home")


@pytest.fixture()
def tiny(node, tiny_model_dir):
    """The tiny model pinned on node (a first pin) and loaded."""
    model, new = node.models.pin(str(tiny_model_dir))
    assert new
    return loader.load(model)
