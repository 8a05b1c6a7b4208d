"""The ring: which devices hold each partition of accounts, containers or objects."""

from cumulo.object_store.ring.builder import RingBuilder, RingError
from cumulo.object_store.ring.ring import Ring

__all__ = ["Ring", "RingBuilder", "RingError"]
