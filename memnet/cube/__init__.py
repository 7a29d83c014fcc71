"""MemCube format (MIP v1): pure functions over bytes, no I/O."""
