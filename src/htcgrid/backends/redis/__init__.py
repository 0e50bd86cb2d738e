"""The Redis backend: a shared store for a multi-machine grid (docs/redis.md)."""

from htcgrid.backends.redis.backend import RedisBackend
from htcgrid.backends.redis.blobs import RedisBlobStore

__all__ = ["RedisBackend", "RedisBlobStore"]
