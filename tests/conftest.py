"""Fixtures shared by the whole suite. Real parts only: the machine's Redis (with a key prefix
per test so runs never collide), real databases for the matrix, real MCP servers."""

from __future__ import annotations

import os

import pytest
import redis

from tests.support import REDIS_URL, delete_prefix, unique_prefix

# In CI (and when asked) every real service must be there: a missing one fails, never skips.
REQUIRE_SERVICES = bool(os.environ.get("CI") or os.environ.get("MESH_TEST_REQUIRE_SERVICES"))


def unavailable(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not reachable, and CI requires it")
    pytest.skip(f"{what} is not reachable")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        unavailable(f"Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def bus_prefix(redis_url):
    prefix = unique_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
