"""The block index in the state store (tables ``cache_blocks`` and ``cache_rules``).

Writes take the connection of a ``StateStore.transaction()``; reads go through :func:`read_conn`.
The SQL is portable (no SQLite-only syntax), as the state store's is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from catalog.cache.model import FileIdentity, TtlAction
from catalog.cache.tiers import Block
from catalog.exceptions import StateStoreError
from catalog.store import StateStore

_COLS = ("block_id, file_key, uri, file_size, mtime_ns, etag, block_index, tier, dir, size, "
         "checksum, created_at, last_access, access_count, lrfu_score, pinned, expire_at, "
         "ttl_action, persisted")


@dataclass(frozen=True)
class BlockRow:
    """One row of ``cache_blocks``."""

    block_id: str
    identity: FileIdentity
    index: int
    tier: str
    dir: str
    size: int
    checksum: int
    created_at: float
    last_access: int
    access_count: int
    lrfu_score: float
    pinned: bool
    expire_at: float | None
    ttl_action: TtlAction | None
    persisted: bool


@dataclass(frozen=True)
class Rule:
    """A pin and/or TTL set on a path prefix (a file's own URI, or a folder's)."""

    prefix: str
    pinned: bool
    ttl_s: float | None
    ttl_action: TtlAction | None
    updated_at: float


def read_conn(state: StateStore) -> sqlite3.Connection:
    """This thread's connection of the state store, for reads."""
    return state._conn()


def _query(state: StateStore, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    try:
        return read_conn(state).execute(sql, params).fetchall()
    except sqlite3.Error as e:
        raise StateStoreError(f"block index query failed: {e}") from e


def load_blocks(state: StateStore) -> list[BlockRow]:
    """Every indexed block."""
    rows = _query(state, f"SELECT {_COLS} FROM cache_blocks")
    return [BlockRow(
        block_id=r[0], identity=FileIdentity(uri=r[2], size=r[3], mtime_ns=r[4], etag=r[5]),
        index=r[6], tier=r[7], dir=r[8], size=r[9], checksum=r[10], created_at=r[11],
        last_access=r[12], access_count=r[13], lrfu_score=r[14], pinned=bool(r[15]),
        expire_at=r[16], ttl_action=TtlAction(r[17]) if r[17] else None, persisted=bool(r[18]))
        for r in rows]


def load_rules(state: StateStore) -> list[Rule]:
    """Every pin / TTL rule."""
    rows = _query(state, "SELECT prefix, pinned, ttl_s, ttl_action, updated_at FROM cache_rules")
    return [Rule(prefix=r[0], pinned=bool(r[1]), ttl_s=r[2],
                 ttl_action=TtlAction(r[3]) if r[3] else None, updated_at=r[4]) for r in rows]


def insert_block(conn: sqlite3.Connection, b: Block) -> None:
    """The row of a block just committed (replacing a row of the same id)."""
    conn.execute("DELETE FROM cache_blocks WHERE block_id = ?", (b.block_id,))
    conn.execute(
        f"INSERT INTO cache_blocks ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (b.block_id, b.file_key, b.identity.uri, b.identity.size, b.identity.mtime_ns,
         b.identity.etag, b.index, b.dir.tier.alias, b.dir.path, b.size, b.checksum,
         b.created_at, b.last_access, b.access_count, b.crf, int(b.pinned), b.expire_at,
         b.ttl_action.value if b.ttl_action else None, int(b.persisted)))


def delete_blocks(conn: sqlite3.Connection, block_ids: Iterable[str]) -> None:
    conn.executemany("DELETE FROM cache_blocks WHERE block_id = ?", [(i,) for i in block_ids])


def move_block(conn: sqlite3.Connection, b: Block, tier: str, dir: str) -> None:
    conn.execute("UPDATE cache_blocks SET tier = ?, dir = ? WHERE block_id = ?",
                 (tier, dir, b.block_id))


def update_access(conn: sqlite3.Connection, blocks: Iterable[Block]) -> None:
    """Access statistics (logical time, count, LRFU score) of these blocks."""
    conn.executemany(
        "UPDATE cache_blocks SET last_access = ?, access_count = ?, lrfu_score = ? "
        "WHERE block_id = ?",
        [(b.last_access, b.access_count, b.crf, b.block_id) for b in blocks])


def update_policy(conn: sqlite3.Connection, blocks: Iterable[Block]) -> None:
    """Pinned flag, expiry and TTL action of these blocks."""
    conn.executemany(
        "UPDATE cache_blocks SET pinned = ?, expire_at = ?, ttl_action = ? WHERE block_id = ?",
        [(int(b.pinned), b.expire_at, b.ttl_action.value if b.ttl_action else None, b.block_id)
         for b in blocks])


def set_persisted(conn: sqlite3.Connection, block_ids: Iterable[str]) -> None:
    conn.executemany("UPDATE cache_blocks SET persisted = 1 WHERE block_id = ?",
                     [(i,) for i in block_ids])


def put_rule(conn: sqlite3.Connection, rule: Rule) -> None:
    """Write a rule; one that neither pins nor has a TTL is deleted."""
    conn.execute("DELETE FROM cache_rules WHERE prefix = ?", (rule.prefix,))
    if rule.pinned or rule.ttl_s is not None:
        conn.execute(
            "INSERT INTO cache_rules (prefix, pinned, ttl_s, ttl_action, updated_at) "
            "VALUES (?,?,?,?,?)",
            (rule.prefix, int(rule.pinned), rule.ttl_s,
             rule.ttl_action.value if rule.ttl_action else None, rule.updated_at))
