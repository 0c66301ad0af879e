"""Pure rules of a shared data tier (preset ``data.shared``; components/shared_data.py declares it):
which systems keep a Redis of their own, the shared cache's eviction policy, and each tenant's
logical database number. Here, not in the component, so that the loader can check a stack with them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from .catalog import System

REDIS_DATABASES = range(1, 16)
"""Logical databases a tenant may get: ElastiCache runs 16 (the Redis ``databases`` default), and 0,
where a client that ignores the URL's path lands, stays empty."""
SHARED_POLICY = "noeviction"


def own_cache_reason(system: System) -> str | None:
    """Why ``system`` keeps a Redis of its own where the environment shares one, or None (it may share):
    its catalog entry's ``redis.own_cache``, or a ``redis.memory_gb`` its node is sized for."""
    if system.redis is None:
        return None
    if system.redis.own_cache:
        return system.redis.own_cache
    if system.redis.memory_gb:
        return f"redis.memory_gb {system.redis.memory_gb:g}: a node sized for it"
    return None


def shared_policy(policies: Iterable[str]) -> str:
    """The shared cache's ``maxmemory-policy``: the tenants' own when they agree, else :data:`SHARED_POLICY`
    (the only policy under which one tenant's memory use cannot evict another tenant's keys)."""
    distinct = set(policies)
    return distinct.pop() if len(distinct) == 1 else SHARED_POLICY


def _home(key: str, slots: range) -> int:
    """The index ``stacks.edge.stable_slots`` starts probing ``key`` from."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % len(slots)


def redis_databases(tenants: Iterable[str], pins: Mapping[str, int] | None = None) -> dict[str, int]:
    """A logical database per tenant: a pinned one as pinned, the others from a hash of the name,
    probing past every taken number in sorted name order (``stacks.edge.stable_slots``'s assignment
    when nothing is pinned). Adding a tenant moves no other one unless the new name's probe reaches a
    number an existing tenant holds and the new name sorts first: pin that tenant. Raises
    ``ValueError`` past 15 tenants."""
    keys = sorted(set(tenants))
    if len(keys) > len(REDIS_DATABASES):
        raise ValueError(f"{len(keys)} systems share a cache of {len(REDIS_DATABASES)} logical databases")
    out = {k: n for k, n in (pins or {}).items() if k in keys}
    taken = set(out.values())
    for key in keys:
        if key in out:
            continue
        index = _home(key, REDIS_DATABASES)
        while REDIS_DATABASES[index] in taken:
            index = (index + 1) % len(REDIS_DATABASES)
        out[key] = REDIS_DATABASES[index]
        taken.add(out[key])
    return dict(sorted(out.items()))
