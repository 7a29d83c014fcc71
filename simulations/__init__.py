"""Simulations that drive memnet's pure policy code (no network, no store)."""
