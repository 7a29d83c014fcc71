"""Parameter (LoRA) cubes against the pinned model: import, train, apply and compose.

An adapter is bound to the fingerprint of the exact model it was made for (meta.base_model) and
is refused on any other. Weights travel as safetensors only (never pickle), with the PEFT config
in the header; applying them uses peft's own layers, injected into the loaded model in place:
`loaded.model` stays the transformers model (same object, same config, same forward signature).
The active adapters are then merged into the weights they touch (an adapted model runs at the
base model's speed: no first-token or per-token cost), and deactivating puts the saved base
weights back and unloads the LoRA layers, giving back bit-for-bit the base model.

Composition: several adapters are active together, each scaled by its weight, so every adapted
layer computes  W x + sum_i w_i * s_i * B_i A_i x  (s_i = alpha_i / r_i, or alpha_i / sqrt(r_i)
under rsLoRA). This is the exact weighted sum of the adapters' updates, the same result as
peft's add_weighted_adapter(combination_type="cat") without building the concatenated copy; it
allows different ranks and different target modules. ("linear" would need equal ranks and
mixes the A and B factors separately, which is only an approximation of the sum.)
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from memnet import ingest
from memnet.cube import canonical, cid, payloads
from memnet.cube.build import Cube
from memnet.cube.safetensors_header import parse_header
from memnet.errors import FormatError, MemnetError, NotFoundError, PolicyError, UsageError
from memnet.governance import revocations
from memnet.governance.gate import Gate
from memnet.local import Publisher
from memnet.model.loader import LoadedModel
from memnet.model.pinned import PinnedModel
from memnet.store import Store

FINGERPRINT_DOMAIN = b"memnet/adapter/v1\x00"
MAX_WEIGHT = 100
MAX_ADAPTERS = 16
PEFT_PREFIX = "base_model.model."   # how PEFT names saved tensors: base_model.model.<module path>.lora_A.weight
# PEFT config features that change what an adapter computes and that memnet does not apply
UNSUPPORTED = ("use_dora", "lora_bias", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern",
               "layer_replication", "trainable_token_indices", "target_parameters", "alora_invocation_tokens",
               "use_qalora")
MIN_TRAIN_TOKENS = 32
EVAL_CHUNKS = 8

Spec = tuple[bytes, float]


# -- which adapters, and their fingerprint -----------------------------------------------------

def _milli(weight: float) -> int:
    """A weight as integer thousandths: what is fingerprinted and what is applied."""
    milli = round(weight * 1000)
    if abs(weight * 1000 - milli) > 1e-6:
        raise UsageError(f"adapter weight {weight} has more than 3 decimals")
    if milli == 0 or abs(milli) > MAX_WEIGHT * 1000:
        raise UsageError(f"adapter weight {weight} must be non-zero and within ±{MAX_WEIGHT}")
    return milli


def _canonical(specs: Sequence[Spec]) -> list[tuple[bytes, int]]:
    """Sorted by cube id with weights in thousandths; a repeated cube is refused."""
    if len(specs) > MAX_ADAPTERS:
        raise UsageError(f"{len(specs)} adapters; at most {MAX_ADAPTERS} can be composed")
    pairs = sorted((bytes(cube_id), _milli(weight)) for cube_id, weight in specs)
    for (a, _), (b, _) in zip(pairs, pairs[1:]):
        if a == b:
            raise UsageError(f"adapter {cid.to_text(a)} is given twice; give it once with the summed weight")
    return pairs


def parse_specs(text: str) -> list[Spec]:
    """`CID[:weight],CID[:weight],...` (weight default 1, at most 3 decimals, non-zero, negative
    allowed to subtract a skill) -> [(cube id, weight)] in the given order. Blank text -> []."""
    specs: list[Spec] = []
    if not text.strip():
        return specs
    for part in text.split(","):
        part = part.strip()
        cube_text, colon, weight_text = part.partition(":")
        if not cube_text or (colon and not weight_text.strip()):
            raise UsageError(f"--lora: {part!r} in {text!r} is not CID[:weight]")
        try:
            cube_id = cid.from_text(cube_text)
        except FormatError as exc:
            raise UsageError(f"--lora: {exc}") from None
        weight = 1.0
        if weight_text:
            try:
                exact = Decimal(weight_text.strip())
            except InvalidOperation:
                raise UsageError(f"--lora: weight {weight_text!r} is not a number") from None
            if not exact.is_finite() or exact != exact.quantize(Decimal("0.001")):
                raise UsageError(f"--lora: weight {weight_text!r} must be a finite number with at most 3 decimals")
            weight = float(exact)
        specs.append((cube_id, weight))
    _canonical(specs)  # same checks as everywhere: range, duplicates, count
    return specs


def adapter_fingerprint(specs: Sequence[Spec]) -> bytes | None:
    """What a KV cube computed under adapters is bound to; None when no adapter is applied.

    sha256(b"memnet/adapter/v1\\0" + canonical msgpack of [[cube id, weight in thousandths], ...]
    sorted by cube id). Sorted, because a weighted sum does not depend on the order; integer
    thousandths, so that no float formatting enters the hash (and the weight applied is exactly
    the one hashed). The cube ids pin the adapter bytes and, through meta.base_model, the model.
    """
    pairs = _canonical(specs)
    if not pairs:
        return None
    return hashlib.sha256(FINGERPRINT_DOMAIN + canonical.encode([[c, m] for c, m in pairs])).digest()


# -- checking that an adapter fits a model -----------------------------------------------------

_linear_cache: dict[bytes, dict[str, tuple[int, int]]] = {}


def _linear_shapes(pinned: PinnedModel) -> dict[str, tuple[int, int]]:
    """module path -> (in_features, out_features) of every Linear of the pinned architecture,
    from its config alone (built on the meta device: no weights are read or allocated)."""
    if pinned.fingerprint not in _linear_cache:
        from memnet.model.runtime import torch, transformers

        config = transformers.AutoConfig.from_pretrained(str(pinned.folder), local_files_only=True)
        with torch.device("meta"):
            skeleton = transformers.AutoModelForCausalLM.from_config(config)
        _linear_cache[pinned.fingerprint] = {
            name: (module.in_features, module.out_features)
            for name, module in skeleton.named_modules() if isinstance(module, torch.nn.Linear)}
    return _linear_cache[pinned.fingerprint]


def _check_config(config: dict[str, Any], error: type[MemnetError], what: str) -> None:
    used = [key for key in UNSUPPORTED if config.get(key)]
    if config.get("bias") not in (None, "none"):
        used.append(f"bias={config['bias']}")
    if used:
        raise error(f"{what}: uses PEFT features memnet does not apply ({', '.join(used)})")


def _fitted_modules(payload: bytes, pinned: PinnedModel, error: type[MemnetError], what: str) -> list[str]:
    """The module paths an adapter patches, each checked to be a Linear of the pinned model with
    lora_A [r, in_features] and lora_B [out_features, r]."""
    header = parse_header(payload, payloads.LORA_DTYPES)
    linears = _linear_shapes(pinned)
    paths = []
    for name, info in sorted(header.tensors.items()):
        if ".lora_B." in name:
            continue  # checked with its A (the payload check already paired them)
        if not (name.startswith(PEFT_PREFIX) and name.endswith(".lora_A.weight")):
            raise error(f"{what}: tensor {name!r} is not named as PEFT saves it "
                        f"({PEFT_PREFIX}<module>.lora_A.weight)")
        path = name[len(PEFT_PREFIX):-len(".lora_A.weight")]
        if path not in linears:
            raise error(f"{what}: it adapts {path}, which model {pinned.name} ({pinned.short}) does not have "
                        "(an adapter for another architecture?)")
        b_shape = header.tensors[name.replace(".lora_A.", ".lora_B.")].shape
        have, want = (info.shape[1], b_shape[0]), linears[path]
        if have != want:
            raise error(f"{what}: {path} maps {want[0]} -> {want[1]} features in model {pinned.name}, "
                        f"the adapter's {have[0]} -> {have[1]} (an adapter for another model?)")
        paths.append(path)
    return paths


# -- import ------------------------------------------------------------------------------------

def import_adapter(publisher: Publisher, folder: Path, pinned: PinnedModel, *, name: str | None = None,
                   pin: bool = True) -> Cube:
    """A PEFT adapter folder (safetensors only) -> a parameter cube bound to the pinned model,
    refused unless every patched module exists in that model with matching shapes."""
    payload, meta = ingest.adapter_from_dir(folder, pinned.fingerprint)
    _check_config(payloads.peft_config_of(payload), UsageError, str(folder))
    _fitted_modules(payload, pinned, UsageError, str(folder))
    return publisher.publish("parameter", payload, meta, name=name, pin=pin,
                             description=f"LoRA for {pinned.name} ({pinned.short}), imported from {folder.absolute().name}")


# -- applying ----------------------------------------------------------------------------------

def _read_adapter(store: Store, gate: Gate, loaded: LoadedModel, cube_id: bytes) -> tuple[bytes, list[str], dict[str, Any]]:
    """A stored parameter cube's payload, checked against the running model:
    (payload, patched module paths, PEFT config)."""
    text = cid.to_text(cube_id)
    revocations.refuse_revoked(store, cube_id)  # PolicyError naming why, though the cube is gone
    try:
        manifest = store.manifest(cube_id)
        payload = store.read_payload(cube_id)
    except NotFoundError:
        raise NotFoundError(f"no cube {text} in the store; fetch it with `memnet get {text}`") from None
    gate.check("inject", cube_id, manifest.author)  # PolicyError: revoked, or an author not trusted to inject
    pinned = loaded.pinned
    if manifest.kind != "parameter":
        raise PolicyError(f"cube {text} is a {manifest.kind} cube, not a parameter (LoRA) cube")
    base = manifest.meta["base_model"]
    if base != pinned.fingerprint:
        raise PolicyError(f"adapter {text} was made for model {base.hex()[:12]}, "
                          f"not the running {pinned.name} ({pinned.short})")
    payloads.validate_parameter(payload, manifest.meta)
    config = payloads.peft_config_of(payload)
    _check_config(config, PolicyError, f"adapter {text}")
    return payload, _fitted_modules(payload, pinned, PolicyError, f"adapter {text}"), config


def _lora_config(config: dict[str, Any], modules: list[str]):
    from peft import LoraConfig

    # exact module paths: LoRA layers go where the adapter has weights and nowhere else
    return LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules=modules,
                      use_rslora=bool(config.get("use_rslora", False)), lora_dropout=0.0, bias="none")


def _deactivate(loaded: LoadedModel) -> None:
    """Unload every LoRA layer: the model's original Linear modules go back in place."""
    for weight, original in loaded.adapters.pop("merged", []):
        weight.data.copy_(original)   # the base weights back bit for bit (unmerging would round)
    wrapper = loaded.adapters.pop("peft", None)
    if wrapper is not None:
        wrapper.base_model.unload()
        for param, flag in zip(loaded.model.parameters(), loaded.adapters.pop("requires_grad")):
            param.requires_grad_(flag)  # peft froze the base weights; give back what the caller had
    loaded.adapters.pop("specs", None)
    loaded.adapters.pop("fingerprint", None)


def _wrap(loaded: LoadedModel, config, adapter_name: str):
    """A peft wrapper around loaded.model (which it modifies in place) with a first adapter."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    loaded.adapters["requires_grad"] = [p.requires_grad for p in loaded.model.parameters()]
    try:
        with warnings.catch_warnings():  # transformers' deprecation notice for an attribute peft reads
            warnings.simplefilter("ignore", FutureWarning)
            wrapper = PeftModel(loaded.model, config, adapter_name=adapter_name)
    except BaseException:
        # injection stopped half-way: put back the base layers it had already wrapped
        for path, module in list(loaded.model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                parent, _, attr = path.rpartition(".")
                setattr(loaded.model.get_submodule(parent), attr, module.get_base_layer())
        for param, flag in zip(loaded.model.parameters(), loaded.adapters.pop("requires_grad")):
            param.requires_grad_(flag)
        raise
    loaded.adapters["peft"] = wrapper
    return wrapper


def _merge(loaded: LoadedModel) -> None:
    """Fold the active adapters into the base weights they touch, keeping those weights to put
    back exactly (_deactivate). Unmerged, every adapted Linear runs two more rank-r matmuls per
    forward, ~10 % of a short prompt's time to first token here; merged, the adapted model runs
    at the base model's speed, and its logits differ from the unmerged ones by float rounding
    only (tests/test_lora.py)."""
    from peft.tuners.lora import LoraLayer

    saved = loaded.adapters.setdefault("merged", [])
    for module in loaded.model.modules():
        if isinstance(module, LoraLayer) and module.active_adapters:
            weight = module.get_base_layer().weight
            saved.append((weight, weight.detach().clone()))
            module.merge(adapter_names=list(module.active_adapters))


def activate(store: Store, gate: Gate, loaded: LoadedModel, specs: Sequence[Spec]) -> bytes | None:
    """Apply exactly these adapters (weighted sum, see the module doc) to loaded.model, replacing
    whatever was applied before; [] gives back the plain base model. Returns the adapter
    fingerprint (None for no adapters). Every cube is read and checked before the model is
    touched: a refused adapter leaves the previous state in place."""
    pairs = _canonical(specs)
    fingerprint = adapter_fingerprint(specs)
    if loaded.adapters.get("fingerprint") == fingerprint and ("peft" in loaded.adapters) == bool(pairs):
        return fingerprint
    adapters = [_read_adapter(store, gate, loaded, cube_id) for cube_id, _ in pairs]
    _deactivate(loaded)
    if not pairs:
        return None
    _apply(loaded, [(cid.to_text(c), milli, *adapter) for (c, milli), adapter in zip(pairs, adapters)])
    loaded.adapters["specs"] = pairs
    loaded.adapters["fingerprint"] = fingerprint
    return fingerprint


def _apply(loaded: LoadedModel, adapters: list[tuple[str, int, bytes, list[str], dict[str, Any]]]) -> None:
    """Inject checked adapters (label, weight in thousandths, payload, module paths, PEFT config)
    into the plain model and merge them; on any failure the plain model is given back."""
    from peft import set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load

    from memnet.model.runtime import torch

    try:
        names = []
        with torch.random.fork_rng(devices=[]):  # peft initialises the new layers randomly
            for index, (label, milli, payload, modules, config) in enumerate(adapters):
                adapter_name = f"cube{index}"
                lora_config = _lora_config(config, modules)
                if "peft" not in loaded.adapters:
                    _wrap(loaded, lora_config, adapter_name)
                else:
                    loaded.adapters["peft"].add_adapter(adapter_name, lora_config)
                result = set_peft_model_state_dict(loaded.adapters["peft"], load(payload), adapter_name=adapter_name)
                missing = [k for k in result.missing_keys if f".{adapter_name}." in k]
                if missing or result.unexpected_keys:
                    raise PolicyError(f"adapter {label} did not load cleanly "
                                      f"(missing {missing[:2]}, unexpected {result.unexpected_keys[:2]})")
                for module in loaded.model.modules():
                    if isinstance(module, LoraLayer):
                        module.set_scale(adapter_name, milli / 1000)  # scaling = w * alpha / r
                names.append(adapter_name)
        loaded.adapters["peft"].base_model.set_adapter(names, inference_mode=True)
        _merge(loaded)
    except BaseException:
        _deactivate(loaded)
        raise


@contextmanager
def trial(store: Store, gate: Gate, loaded: LoadedModel, payload: bytes, meta: dict[str, Any]):
    """An adapter not published yet (payload and meta, checked as a fetched one would be) applied
    alone, for measuring it before it is published; the adapters applied before come back after."""
    payloads.validate_parameter(payload, meta)
    if meta["base_model"] != loaded.pinned.fingerprint:
        raise PolicyError("the adapter was made for another model")
    config = payloads.peft_config_of(payload)
    _check_config(config, PolicyError, "the trial adapter")
    modules = _fitted_modules(payload, loaded.pinned, PolicyError, "the trial adapter")
    previous = [(c, m / 1000) for c, m in loaded.adapters.get("specs", [])]
    _deactivate(loaded)
    try:
        _apply(loaded, [("on trial", 1000, payload, modules, config)])
        yield loaded
    finally:
        _deactivate(loaded)
        activate(store, gate, loaded, previous)


# -- training ----------------------------------------------------------------------------------

def read_text(text_path: Path) -> str:
    """A training text file, refused (one line) when missing, too large, not UTF-8 or blank;
    cheap, so a command can check it before loading the model."""
    text = ingest.read_text(text_path)
    if not text.strip():
        raise UsageError(f"{text_path}: holds no text to train on")
    return text


def _training_ids(loaded: LoadedModel, text_path: Path) -> list[int]:
    ids = list(loaded.tokenizer(read_text(text_path), add_special_tokens=False)["input_ids"])
    if len(ids) < MIN_TRAIN_TOKENS:
        raise UsageError(f"{text_path}: too little text to train on ({len(ids)} tokens, "
                         f"at least {MIN_TRAIN_TOKENS} needed)")
    return ids


def _chunks(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of seq_len tokens covering the text (the last one ends at its end)."""
    if len(ids) <= seq_len:
        return [ids]
    starts = list(range(0, len(ids) - seq_len + 1, seq_len))
    if starts[-1] + seq_len < len(ids):
        starts.append(len(ids) - seq_len)
    return [ids[s:s + seq_len] for s in starts]


def train(publisher: Publisher, gate: Gate, loaded: LoadedModel, text_path: Path, *, steps: int, rank: int = 8, alpha: int = 16,
          targets: Sequence[str] = ("q_proj", "v_proj"), lr: float = 2e-3, seq_len: int = 128,
          batch: int = 2, seed: int = 0, progress: Callable[[int, int, float], None] | None = None,
          name: str | None = None, stats: dict[str, float] | None = None) -> Cube:
    """Train a LoRA on a text file (causal LM loss over windows of seq_len tokens, batch windows
    per step, AdamW) and publish it as a parameter cube bound to the running model.

    Deterministic for a seed on one machine and thread count (LoRA init and window order come
    from it). progress(step, steps, batch loss) is called after each step. If stats is given it
    receives loss_before/loss_after (mean loss over the first EVAL_CHUNKS windows of the text),
    seconds, tokens and windows. loaded.model is left as it was: the LoRA layers are unloaded
    afterwards and adapters applied before are applied again.
    """
    from memnet.model.runtime import torch

    if seq_len < 8:
        raise UsageError("steps, rank, alpha and batch must be positive, seq_len at least 8, lr above 0")
    config = lora_config_for(loaded, rank=rank, alpha=alpha, targets=targets, steps=steps, batch=batch, lr=lr)
    ids = _training_ids(loaded, text_path)
    chunks = _chunks(ids, seq_len)
    draw = shuffled_batches(chunks, batch, seed)

    def next_batch():
        window = torch.tensor(draw())  # equal lengths: seq_len, or the whole of a shorter text
        return window, None, window

    evaluation = [(torch.tensor([c]), None, torch.tensor([c])) for c in chunks[:EVAL_CHUNKS]]
    start = time.perf_counter()
    state, loss_before, loss_after = fit(publisher.store, gate, loaded, config, next_batch, evaluation,
                                         steps=steps, lr=lr, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    payload, meta = adapter_payload(loaded, config, state)
    if stats is not None:
        stats.update(loss_before=loss_before, loss_after=loss_after, seconds=seconds,
                     tokens=len(ids), windows=len(chunks))
    description = (f"rank-{rank} LoRA ({', '.join(sorted(set(targets)))}) for {loaded.pinned.name} "
                   f"({loaded.pinned.short}) trained on {text_path.name}: {steps} steps, "
                   f"loss {loss_before:.3f} -> {loss_after:.3f}")
    return publisher.publish("parameter", payload, meta, name=name, description=description)


def shuffled_batches(items: Sequence[Any], batch: int, seed: int) -> Callable[[], list[Any]]:
    """A batch source: each call gives the next min(batch, len(items)) items of a seeded
    shuffle, reshuffled whenever the items run out (every item once per pass)."""
    order, queue = random.Random(seed), []

    def draw() -> list[Any]:
        rows = []
        for _ in range(min(batch, len(items))):
            if not queue:
                queue.extend(items)
                order.shuffle(queue)
            rows.append(queue.pop())
        return rows
    return draw


def lora_config_for(loaded: LoadedModel, *, rank: int, alpha: int, targets: Sequence[str], steps: int = 1,
                    batch: int = 1, lr: float = 1e-3):
    """A peft LoraConfig for training on the loaded model; UsageError for bad settings or target
    modules the model lacks."""
    from peft import LoraConfig

    if steps < 1 or rank < 1 or alpha < 1 or batch < 1 or not lr > 0:
        raise UsageError("steps, rank, alpha and batch must be positive, seq_len at least 8, lr above 0")
    if not targets:
        raise UsageError("name at least one target module (e.g. q_proj)")
    linears = {path.rsplit(".", 1)[-1] for path in _linear_shapes(loaded.pinned)}
    unknown = sorted(set(targets) - linears)
    if unknown:
        raise UsageError(f"model {loaded.pinned.name} has no {', '.join(unknown)} modules "
                         f"(it has {', '.join(sorted(linears))})")
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=sorted(set(targets)), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")


def fit(store: Store, gate: Gate, loaded: LoadedModel, config, next_batch: Callable[[], tuple], evaluation: list[tuple], *,
        steps: int, lr: float, seed: int, progress: Callable[[int, int, float], None] | None = None
        ) -> tuple[dict[str, Any], float, float]:
    """Train a fresh LoRA (config) on the plain base model with AdamW: each step one batch from
    next_batch() as (input_ids, attention_mask or None, labels with -100 where no loss). Returns
    (the adapter's tensors, mean loss over evaluation before, after). progress(step, steps, loss)
    after each step; an exception it raises stops training (cancellation). The model is left as
    it was: LoRA layers unloaded, adapters applied before applied again."""
    from peft import get_peft_model_state_dict

    from memnet.model.runtime import set_threads, torch

    set_threads()
    previous = [(c, m / 1000) for c, m in loaded.adapters.get("specs", [])]
    activate(store, gate, loaded, [])  # train against the plain base model

    def mean_loss() -> float:
        with torch.no_grad():
            return sum(float(loaded.model(input_ids=i, attention_mask=a, labels=y).loss)
                       for i, a, y in evaluation) / len(evaluation)

    try:
        # the model stays in eval mode: LoRA dropout is 0 and Llama-style models have no other,
        # so a step is a pure function of the seed and the data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            wrapper = _wrap(loaded, config, "trained")  # ("train" would clash with Module.train)
        loss_before = mean_loss()
        params = [p for p in wrapper.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        with torch.enable_grad():
            for step in range(1, steps + 1):
                ids, mask, labels = next_batch()
                loss = loaded.model(input_ids=ids, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if progress is not None:
                    progress(step, steps, loss.item())
        loss_after = mean_loss()
        trained = get_peft_model_state_dict(wrapper, adapter_name="trained")
        state = {k: v.detach().contiguous() for k, v in trained.items()}
    finally:
        _deactivate(loaded)
        activate(store, gate, loaded, previous)
    return state, loss_before, loss_after


def adapter_payload(loaded: LoadedModel, config, state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """A trained adapter as a parameter cube's payload and meta, checked as a fetcher would."""
    from safetensors.torch import save

    peft_config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    peft_config.update(peft_type="LORA", task_type="CAUSAL_LM", base_model_name_or_path=loaded.pinned.name)
    payload = payloads.build_parameter_payload(json.loads(json.dumps(peft_config, default=str)),
                                               save(state, metadata={"format": "pt"}))
    meta = {"base_model": loaded.pinned.fingerprint, "peft": payloads.peft_summary(peft_config)}
    payloads.validate_parameter(payload, meta)
    return payload, meta
