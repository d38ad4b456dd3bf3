"""Looking for a secret wherever it must not be: in its plain form, hex, and base64 (standard and
URL-safe, at every alignment it could take inside a longer base64 string, such as HTTP basic
auth), across every Redis key of a prefix and every row of every table."""

from __future__ import annotations

import base64

import redis
import sqlalchemy as sa


def forms_of(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    forms = {"plain": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw)
        # Drop the 4-character groups that depend on bytes around the secret.
        core = encoded[4 if offset else 0: len(encoded) - 4]
        forms[f"base64+{offset}"] = core
        forms[f"base64url+{offset}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return forms


def find_secret(blob: bytes | str, secret: str) -> list[str]:
    """The forms of ``secret`` found in ``blob`` (empty: none)."""
    data = blob.encode(errors="surrogateescape") if isinstance(blob, str) else blob
    return [name for name, form in forms_of(secret).items() if len(form) >= 8 and form in data]


def redis_dump(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    """Every key under ``prefix:`` with its whole content, whatever its type."""
    dump = {}
    for key in client.scan_iter(f"{prefix}:*"):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key)]
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts = [b for _, fields in client.xrange(key) for pair in fields.items() for b in pair]
        else:
            raise AssertionError(f"unexpected Redis type {kind} at {key!r}")
        dump[key.decode()] = b"\n".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return dump


def database_dump(engine: sa.Engine) -> dict[str, bytes]:
    """Every row of every table, each value as text."""
    dump = {}
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).all()
            dump[table] = b"\n".join(
                b"\t".join(v if isinstance(v, bytes) else str(v).encode() for v in row) for row in rows)
    return dump
