"""Governance: whose cubes this node uses (trust), withdrawn cubes (revocation) and which cubes
went into which answer (audit)."""
