"""Make a small PEFT LoRA adapter folder for the demo and print its base-model fingerprint.

The base is a tiny Llama built here from a fixed seed; its fingerprint is sha256 over the weights
(name, dtype, shape, bytes, in name order). Model pinning with SmolLM2 is a later feature.
"""

import hashlib
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main(folder: str) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    base = LlamaForCausalLM(config)
    digest = hashlib.sha256()
    for name, tensor in sorted(base.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                      init_lora_weights=False)  # non-zero B, so the adapter visibly changes outputs
    get_peft_model(base, lora).save_pretrained(folder, safe_serialization=True)
    print(digest.hexdigest())


if __name__ == "__main__":
    main(sys.argv[1])
