from __future__ import annotations

import pytest

from tests.support import Gateway, Upstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("upstream")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory, redis_url):
    """`mesh up` for the whole module; a module may name settings it runs with in ``GATEWAY_ENV``."""
    env = getattr(request.module, "GATEWAY_ENV", None)
    gw = Gateway(tmp_path_factory.mktemp("gateway"), redis_url, env=env).start()
    yield gw
    assert gw.stop() == 0, "mesh up did not stop cleanly on Ctrl-C"
