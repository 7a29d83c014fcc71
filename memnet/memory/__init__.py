"""Plaintext memory: the embedder, notes parsing, and the recall index (remember / import / recall)."""
