from __future__ import annotations

import pytest

from tests.support import Gateway, Upstream


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("upstream")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, redis_url):
    gw = Gateway(tmp_path_factory.mktemp("gateway"), redis_url).start()
    yield gw
    assert gw.stop() == 0, "mesh up did not stop cleanly on Ctrl-C"
