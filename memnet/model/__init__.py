"""Model memory: the pinned model, activation (KV) cubes and parameter (LoRA) cubes.

torch and transformers load lazily (memnet.model.runtime): commands that never touch a model
start in a fraction of a second.
"""
