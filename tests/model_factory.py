"""A tiny, randomly initialised Llama with its own byte-level BPE tokenizer, built offline.

tiny_model_folder() writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template) that `memnet model pin PATH` accepts like a real one.
Same arguments, same files: the tokenizer is trained on a fixed text and the weights come from a
seeded generator, so the pinned fingerprint is stable.
"""

from __future__ import annotations

from pathlib import Path

TEXT = """\
The cube is a signed unit of memory. Peers share cubes so that no one computes twice.
A parameter cube holds a LoRA patch; an activation cube holds the keys and values of a prefix.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Memory is content addressed: the same bytes always have the same identifier.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 ? ! , . ; : - ( ) [ ] { } " '
"""
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE (every byte is in the vocabulary, so any text encodes) as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE)


def tiny_model_folder(path: Path, seed: int = 0, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                      kv_heads: int = 2, vocab_size: int = 384) -> Path:
    """Write a tiny LlamaForCausalLM (head_dim = hidden // heads) and its tokenizer into path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden // heads, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # a larger init than the default 0.02, so the random model's outputs are not all alike
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() == 2:
                    param.normal_(0.0, 0.2)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
