"""Local cube store on LMDB: one cube = one transaction, refcounted chunks, pins, indexes."""

from memnet.store.gc import GCReport
from memnet.store.lmdb_store import Entry, Store

__all__ = ["Entry", "GCReport", "Store"]
