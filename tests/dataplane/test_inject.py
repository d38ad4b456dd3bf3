"""The inject addon on real mitmproxy flows: the caller's credentials go, the connection's own
are unwrapped with the data-plane key and added, and a connection whose credentials cannot be
used is answered 503 while the others keep working."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging

import pytest
from mitmproxy.test import taddons, tflow

from dataplane_addon.call import CALL, McpCall
from dataplane_addon.inject import CREDENTIALS_UNAVAILABLE, CredentialInjector
from dataplane_addon.snapshot_store import SnapshotStore
from shared.credentials import delivery_context, url_origin, vault_context
from shared.envelope import Keyring, encode_key, generate_key, seal
from shared.jsonrpc import parse_body
from shared.snapshot import ConnectionRoute, Snapshot

TOKEN = "sk-upstream-token-5e6f7a8b9c0d"
API_KEY = "sk-other-api-key-1f2e3d4c5b6a"
DATAPLANE = Keyring.single(generate_key())
UPSTREAM_URL = "http://127.0.0.1:9/mcp"


def sealed(connection_id: str, field: str, value: str, keyring: Keyring = DATAPLANE, org: str = "org_a") -> str:
    return seal(value.encode(), delivery_context(org, connection_id, field, origin=url_origin(UPSTREAM_URL)),
                keyring).to_json()


def store_with(**routes: ConnectionRoute) -> SnapshotStore:
    store = SnapshotStore()
    store.apply(Snapshot(org_id="org_a", version=1, connections=routes))
    return store


def route(**credentials: str) -> ConnectionRoute:
    return ConnectionRoute(name="up", url=UPSTREAM_URL, credentials=credentials)


def call_through(injector: CredentialInjector, store: SnapshotStore, connection_id: str):
    flow = tflow.tflow()
    flow.request.path = f"/mcp/{connection_id}"
    flow.request.headers["Authorization"] = "Bearer mesh_caller_key"
    flow.request.headers["Cookie"] = "session=caller"
    flow.request.content = b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'
    flow.metadata[CALL] = McpCall(connection_id, upstream=store.upstream(connection_id),
                                  messages=parse_body(flow.request.content).messages)
    injector.request(flow)
    return flow


@pytest.fixture
def injector(tmp_path, monkeypatch):
    monkeypatch.delenv("MESH_DATAPLANE_KEY", raising=False)
    key_file = tmp_path / "dataplane.key"
    key_file.write_text(encode_key(DATAPLANE.keys[DATAPLANE.active]) + "\n")
    addon = CredentialInjector()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mesh_dataplane_key_file=str(key_file))
        yield addon


def test_each_kind_of_credential_becomes_its_header_and_the_callers_are_removed(injector):
    store = store_with(conn_1=route(**{
        "header:X-API-Key": sealed("conn_1", "header:X-API-Key", API_KEY),
        "basic": sealed("conn_1", "basic", f"svc:{TOKEN}"),
        "env:TOKEN": sealed("conn_1", "env:TOKEN", TOKEN),
    }), conn_2=route(bearer=sealed("conn_2", "bearer", TOKEN)))
    flow = call_through(injector, store, "conn_1")
    assert flow.response is None
    headers = flow.request.headers
    assert headers["X-API-Key"] == API_KEY
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"svc:{TOKEN}".encode()).decode()
    assert "Cookie" not in headers and "TOKEN" not in headers
    assert (flow.request.host, flow.request.port, flow.request.path) == ("127.0.0.1", 9, "/mcp")
    bearer = call_through(injector, store, "conn_2")
    assert bearer.request.headers.get_all("Authorization") == [f"Bearer {TOKEN}"]


def test_a_connection_without_credentials_forwards_without_any_authorization(injector):
    flow = call_through(injector, store_with(conn_1=route()), "conn_1")
    assert flow.response is None and "Authorization" not in flow.request.headers


@pytest.mark.parametrize("damage", ["ct", "n", "wk", "wn", "kid", "swap", "other key", "vault copy"])
def test_unusable_credentials_get_503_for_that_connection_only(injector, damage, caplog):
    good = sealed("conn_1", "bearer", TOKEN)
    if damage == "swap":
        bad = sealed("conn_2", "bearer", API_KEY)  # another connection's record
    elif damage == "other key":
        bad = sealed("conn_1", "bearer", TOKEN, keyring=Keyring.single(generate_key()))
    elif damage == "vault copy":
        bad = seal(TOKEN.encode(), vault_context("org_a", "conn_1", "bearer", origin=url_origin(UPSTREAM_URL)),
                   DATAPLANE).to_json()
    else:
        doc = json.loads(good)
        if damage == "kid":
            doc["kid"] = "k" + "0" * 16
        else:
            raw = bytearray(base64.urlsafe_b64decode(doc[damage] + "=" * (-len(doc[damage]) % 4)))
            raw[0] ^= 0x80
            doc[damage] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        bad = json.dumps(doc)
    store = store_with(conn_1=route(bearer=bad), conn_2=route(bearer=sealed("conn_2", "bearer", API_KEY)))
    with caplog.at_level(logging.DEBUG):
        broken = [call_through(injector, store, "conn_1") for _ in range(3)]
        working = call_through(injector, store, "conn_2")
    for flow in broken:
        assert flow.response.status_code == 503
        body = flow.response.json()
        assert body["id"] == 7 and body["error"]["code"] == CREDENTIALS_UNAVAILABLE
        assert "'up'" in body["error"]["message"] and TOKEN not in flow.response.text
    assert working.response is None and working.request.headers["Authorization"] == f"Bearer {API_KEY}"
    reports = [r for r in caplog.records if "conn_1" in r.getMessage() and "broken" in r.getMessage()]
    assert len(reports) == 1, "logged once per snapshot, not once per call"
    assert TOKEN not in caplog.text and API_KEY not in caplog.text


def test_a_connection_published_broken_gets_503(injector):
    store = store_with(conn_1=dataclasses.replace(route(), status="broken"))
    assert call_through(injector, store, "conn_1").response.status_code == 503


def test_an_unreadable_credential_in_a_snapshot_marks_the_connection_broken_at_once(injector):
    store = store_with(conn_1=route(bearer="this is not a sealed record"))
    assert store.upstream("conn_1").status == "broken"
    assert call_through(injector, store, "conn_1").response.status_code == 503


def test_without_a_data_plane_key_credentialed_connections_get_503(monkeypatch):
    monkeypatch.delenv("MESH_DATAPLANE_KEY", raising=False)
    addon = CredentialInjector()
    with taddons.context(addon):
        store = store_with(conn_1=route(bearer=sealed("conn_1", "bearer", TOKEN)), conn_2=route())
        assert call_through(addon, store, "conn_1").response.status_code == 503
        assert call_through(addon, store, "conn_2").response is None


def test_the_environment_key_wins_and_a_bad_one_is_refused_clearly(monkeypatch, tmp_path):
    from mitmproxy.exceptions import OptionsError

    addon = CredentialInjector()
    with taddons.context(addon) as tctx:
        monkeypatch.setenv("MESH_DATAPLANE_KEY", DATAPLANE.keys[DATAPLANE.active].hex())
        tctx.configure(addon, mesh_dataplane_key_file=str(tmp_path / "absent.key"))
        assert addon.keyring.active == DATAPLANE.active
        monkeypatch.setenv("MESH_DATAPLANE_KEY", "not-a-key")
        with pytest.raises(OptionsError) as caught:
            tctx.configure(addon, mesh_dataplane_key_file="")
        assert "MESH_DATAPLANE_KEY" in str(caught.value) and "not-a-key" not in str(caught.value)
