"""Local cube store on LMDB: one cube = one transaction, refcounted chunks, pins, indexes."""

from memnet.store.lmdb_store import Entry, GCReport, Store

__all__ = ["Entry", "GCReport", "Store"]
