"""The bridge's small parts, without processes: where the data plane sends bridged connections,
the token, restart pauses, what reaches an upstream, and what never reaches a log."""

from __future__ import annotations

import json

import pytest

from dataplane_addon.bridge.address import (
    TOKEN_HEADER,
    BridgeAddress,
    connection_id_from_path,
    connection_path,
    parse_bridge_address,
    token_matches,
)
from dataplane_addon.bridge.mirror_server import upstream_params
from dataplane_addon.bridge.supervisor import Backoff
from dataplane_addon.bridge.upstream_session import UpstreamSpec
from dataplane_addon.snapshot_store import SnapshotStore, upstream_from
from shared.credentials import delivery_context, env_field, header_field
from shared.envelope import Keyring, seal
from shared.snapshot import ConnectionRoute, Snapshot

BRIDGE = BridgeAddress("127.0.0.1", 4555, "t0ken")
DATAPLANE_KEYRING = Keyring.single(bytes(range(32)))


def sealed(connection_id: str, fields: dict[str, str], origin: str) -> dict[str, str]:
    """Credentials as the control plane delivers them: sealed under the data-plane key, for the
    connection's origin."""
    return {f: seal(v.encode(), delivery_context("org_a", connection_id, f, origin=origin), DATAPLANE_KEYRING).to_json()
            for f, v in fields.items()}


STDIO = ConnectionRoute(name="everything", url="", transport="stdio", command="npx",
                        args=["-y", "@modelcontextprotocol/server-everything"],
                        credentials=sealed("conn_1", {env_field("API_KEY"): "sk-very-secret"}, "stdio"))
SSE = ConnectionRoute(name="old", url="http://legacy.example:8080/sse", transport="sse",
                      credentials=sealed("conn_1", {header_field("X-Key"): "hdr-secret"}, "http://legacy.example:8080"))


def spec_of(route, keyring=DATAPLANE_KEYRING):
    return UpstreamSpec.from_route("conn_1", "org_a", route, keyring)


@pytest.mark.parametrize("route", [STDIO, SSE], ids=["stdio", "sse"])
def test_bridged_connections_go_to_the_bridge_with_only_the_token(route):
    upstream = upstream_from("conn_1", "org_a", route, BRIDGE)
    assert (upstream.scheme, upstream.host, upstream.port, upstream.path, upstream.query) == (
        "http", "127.0.0.1", 4555, "/bridge/conn_1/mcp", "")
    # The connection's own credentials are for the bridge to open and use upstream: the data
    # plane sends the bridge only its token.
    assert upstream.gateway_headers == ((TOKEN_HEADER, "t0ken"),) and upstream.credentials == ()


def test_http_connections_still_go_straight_to_their_url():
    route = ConnectionRoute(name="echo", url="https://up.example:8443/mcp?v=1",
                            credentials=sealed("conn_1", {header_field("X-Key"): "k"}, "https://up.example:8443"))
    upstream = upstream_from("conn_1", "org_a", route, BRIDGE)
    assert (upstream.host, upstream.port, upstream.path, upstream.gateway_headers) == ("up.example", 8443, "/mcp", ())
    assert [f for f, _ in upstream.credentials] == ["header:X-Key"]


def test_the_store_routes_through_the_bridge_it_is_given():
    store = SnapshotStore()
    store.bridge = BRIDGE
    store.apply(Snapshot(org_id="org_a", version=1, connections={"conn_s": STDIO}))
    assert store.upstream("conn_s").port == 4555


def test_snapshots_with_stdio_fields_round_trip_and_older_ones_still_parse():
    snapshot = Snapshot(org_id="org_a", version=2, connections={"conn_s": STDIO, "conn_o": SSE})
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
    older = {"schema": 1, "org_id": "org_a", "version": 1, "connections": {
        "conn_h": {"name": "h", "url": "http://h/mcp", "transport": "http", "status": "active", "credentials": {}}}}
    route = Snapshot.from_json(json.dumps(older)).connections["conn_h"]
    assert (route.command, route.args, route.credentials) == ("", [], {})


def test_bridge_paths_name_exactly_one_connection():
    assert connection_id_from_path(connection_path("conn_abc")) == "conn_abc"
    for path in ("/bridge//mcp", "/bridge/a/b/mcp", "/bridge/conn_abc", "/mcp/conn_abc", "/health"):
        assert connection_id_from_path(path) is None, path


def test_the_token_must_be_present_and_equal():
    assert token_matches("t0ken", "t0ken")
    assert not token_matches("t0ken", "t0ke") and not token_matches("t0ken", None)
    assert not token_matches("", ""), "an unset token must never open the bridge"


def test_bridge_address_parses_host_port_and_keeps_the_token_out_of_repr(monkeypatch):
    monkeypatch.setenv("MESH_BRIDGE_TOKEN", "from-env")
    address = parse_bridge_address("127.0.0.1:3002")
    assert (address.host, address.port, address.token) == ("127.0.0.1", 3002, "from-env")
    assert "from-env" not in repr(address)
    for bad in ("3002", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            parse_bridge_address(bad)


def test_restart_pauses_double_up_to_thirty_seconds_and_reset_after_a_healthy_minute():
    backoff = Backoff()
    pauses = [backoff.pause_after(uptime=1.0) for _ in range(9)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.pause_after(uptime=61.0) == 0.5
    assert backoff.pause_after(uptime=1.0) == 1.0


def test_the_upstream_gets_the_callers_params_without_the_2026_envelope():
    # The caller's progress token and round-trip fields are the bridge's to answer (the upstream
    # gets a progress token of the bridge's own, unique on the shared session).
    params = {"name": "echo", "arguments": {"text": "x", "none": None}, "requestState": "sealed",
              "inputResponses": {"k": {}}, "_meta": {
                  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
                  "progressToken": 7, "trace": "t-1"}}
    assert upstream_params(params) == {"name": "echo", "arguments": {"text": "x", "none": None},
                                       "_meta": {"trace": "t-1"}}
    assert upstream_params({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}) is None
    assert upstream_params(None) is None


def test_the_bridge_opens_env_and_header_values_with_the_data_plane_key():
    assert spec_of(STDIO).env == (("API_KEY", "sk-very-secret"),)
    assert spec_of(SSE).headers == (("X-Key", "hdr-secret"),)


def test_credentials_that_cannot_be_opened_are_refused_not_guessed():
    from shared.envelope import EnvelopeError

    with pytest.raises(EnvelopeError):
        spec_of(STDIO, Keyring.single(bytes(32)))  # another data-plane key
    with pytest.raises(ValueError):
        spec_of(STDIO, None)  # no key at all


def test_env_and_header_values_never_show_in_a_spec_repr_or_description():
    for route, secret in ((STDIO, "sk-very-secret"), (SSE, "hdr-secret")):
        spec = spec_of(route)
        assert secret not in repr(spec) and secret not in spec.describe()
    assert spec_of(STDIO).describe() == "npx -y @modelcontextprotocol/server-everything"


def test_a_changed_env_or_command_is_a_different_upstream():
    same = spec_of(STDIO)
    changed_env = ConnectionRoute(**{**{f: getattr(STDIO, f) for f in STDIO.__slots__},
                                     "credentials": sealed("conn_1", {env_field("API_KEY"): "other"}, "stdio")})
    assert spec_of(STDIO) == same
    assert spec_of(changed_env) != same
