"""memnet: a peer-to-peer daemon for signed, content-addressed LLM memory (MemCubes)."""

__version__ = "0.1.0"
