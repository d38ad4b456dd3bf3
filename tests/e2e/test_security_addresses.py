"""Where calls may go (issue #10, item 10), against the real gateway: a connection registered over
the network (the management tools) may not point at loopback, private, link-local or metadata
addresses in any notation, nor at the gateway's own ports; and whatever a name resolves to later,
the data plane and CONNECTION_TEST check the address they actually connect to."""

from __future__ import annotations


import httpx2
import pytest

from tests.support import MESH, ROOT, mcp_client, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


GATEWAY_ENV = None  # no MESH_ALLOW_PRIVATE_UPSTREAMS: members' connections stay off private addresses


async def tool(gateway, tool_name, **arguments):
    async with mcp_client(gateway.base + "/mcp", gateway.first_run_key) as client:
        return await client.call_tool(tool_name, arguments)


def notations(gateway, upstream) -> list[str]:
    port = upstream.port
    return [
        f"http://127.0.0.1:{port}/mcp",
        f"http://localhost:{port}/mcp",
        f"http://2130706433:{port}/mcp",            # 127.0.0.1 as one decimal number
        f"http://0x7f.1:{port}/mcp",                # and in hex, short form
        f"http://[::1]:{port}/mcp",
        f"http://[::ffff:127.0.0.1]:{port}/mcp",    # IPv4-mapped IPv6
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",      # 169.254.169.254 in decimal
        "http://0251.0376.0251.0376/latest/",       # and in octal
        "http://[::ffff:169.254.169.254]/latest/",
        "http://[fd00:ec2::254]/latest/",
        "http://169.254.169.254.nip.io/latest/",    # a name (it does not even resolve here)
        "http://10.1.2.3/mcp",
        f"http://127.0.0.1:{gateway.control_plane_port}/api/health",
        f"http://127.0.0.1:{gateway.bridge_port}/health",
        f"http://127.0.0.1:{gateway.port}/health",
    ]


async def test_connections_registered_over_the_network_stay_off_private_and_metadata_addresses(gateway, upstream):
    for url in notations(gateway, upstream):
        created = await tool(gateway, "COLLECTION_CONNECTIONS_CREATE", name="probe", url=url)
        assert created.is_error, url
        text = created.content[0].text
        assert "not allowed" in text or "cannot be resolved" in text, (url, text)
    listed = await tool(gateway, "COLLECTION_CONNECTIONS_LIST")
    assert listed.structured_content["items"] == []


async def test_pointing_a_network_connection_elsewhere_is_checked_like_registering_it(gateway, upstream):
    public = (await tool(gateway, "COLLECTION_CONNECTIONS_CREATE", name="public", url="http://8.8.8.8:9/mcp"))
    assert not public.is_error
    conn = public.structured_content["id"]
    for url in (f"http://localhost:{upstream.port}/mcp", "http://2852039166/"):
        moved = await tool(gateway, "COLLECTION_CONNECTIONS_UPDATE", connection_id=conn, url=url)
        assert moved.is_error and "not allowed" in moved.content[0].text
    await tool(gateway, "COLLECTION_CONNECTIONS_DELETE", connection_id=conn)


def operator_add(gateway, url) -> tuple[int, str]:
    import subprocess

    out = subprocess.run([MESH, "connections", "add", "--name", "op", "--url", url, "--json"], env=gateway.env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_the_operator_may_use_private_addresses_but_never_metadata_or_the_gateways_own_ports(gateway, upstream):
    for url in ("http://2852039166/", "http://0251.0376.0251.0376/", "http://[::ffff:169.254.169.254]/",
                f"http://127.0.0.1:{gateway.bridge_port}/health", f"http://localhost:{gateway.control_plane_port}/"):
        code, output = operator_add(gateway, url)
        assert code != 0 and "not allowed" in output, (url, output)
    code, output = operator_add(gateway, f"http://localhost:{upstream.port}/mcp")
    assert code == 0, output


@pytest.mark.parametrize("notation", ["http://localhost:{port}/mcp", "http://2130706433:{port}/mcp",
                                      "http://[::ffff:127.0.0.1]:{port}/mcp", "http://127.0.0.1:{port}/mcp"])
async def test_the_data_plane_checks_the_address_it_connects_to(gateway, upstream, notation):
    conn = (await tool(gateway, "COLLECTION_CONNECTIONS_CREATE", name="moving", url="http://8.8.8.8:9/mcp")
            ).structured_content["id"]
    key = gateway.first_run_key
    gateway.move_connection(conn, notation.format(port=upstream.port))
    before = len(upstream.requests())
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "hi"}}, request_id=6)

    def refused():
        response = httpx2.post(gateway.mcp_url(conn), json=body, headers=mcp_headers(body, key), timeout=15)
        return response.status_code == 502 and "may not call" in response.text and response

    response = wait_for(refused, timeout=20, interval=0.3, what="the moved connection to be refused")
    assert response.json()["id"] == 6 and "loopback or private" in response.json()["error"]["message"]
    assert upstream.requests()[before:] == [], "the upstream was reached"
    await tool(gateway, "COLLECTION_CONNECTIONS_DELETE", connection_id=conn)


async def test_a_kept_alive_client_connection_does_not_carry_one_connections_rights_to_another(gateway, upstream):
    key = gateway.first_run_key
    allowed = gateway.add_connection("operators-echo", upstream.url)  # the operator's: loopback is fine
    moved = (await tool(gateway, "COLLECTION_CONNECTIONS_CREATE", name="members", url="http://8.8.8.8:9/mcp")
             ).structured_content["id"]
    gateway.move_connection(moved, upstream.url)  # the very same address
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "reuse"}})
    with httpx2.Client(timeout=15, headers=mcp_headers(body, key)) as client:  # one TCP connection throughout
        wait_for(lambda: client.post(gateway.mcp_url(moved), json=body).status_code == 502, timeout=20,
                 interval=0.3, what="the moved connection to be refused")
        for _ in range(3):
            assert "reuse" in client.post(gateway.mcp_url(allowed), json=body).text
            before = len(upstream.requests())
            refused = client.post(gateway.mcp_url(moved), json=body)
            assert refused.status_code == 502 and upstream.requests()[before:] == []


async def test_connection_test_checks_the_address_it_connects_to(gateway, upstream):
    # No secret: one given for the old address would not even open for the new one (its origin
    # is bound in); here the probe itself must refuse the address.
    conn = (await tool(gateway, "COLLECTION_CONNECTIONS_CREATE", name="tested", url="http://8.8.8.8:9/mcp")
            ).structured_content["id"]
    gateway.move_connection(conn, f"http://2130706433:{upstream.port}/mcp")
    before = len(upstream.requests())
    tested = (await tool(gateway, "CONNECTION_TEST", connection_id=conn)).structured_content
    assert not tested["ok"] and "address not allowed" in tested["error"]
    assert upstream.requests()[before:] == []
