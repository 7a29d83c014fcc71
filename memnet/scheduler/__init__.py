"""Memory management above the store: what to keep, archive, evict and promote (policy.py, pure),
applied to a node's store by lifecycle.py; the daemon runs it periodically (daemon/upkeep.py)."""
