"""The credential vault end to end: the real `mesh up`, secrets given to the `mesh` command,
a real upstream MCP server that requires its own bearer token, and the `mcp` SDK's client."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from pathlib import Path

import httpx2
import pytest
import sqlalchemy as sa

from control_plane.vault_keys import read_keyring_file
from shared.credentials import route_origin, vault_context
from shared.envelope import EnvelopeError, generate_key, open_sealed
from tests.secret_scan import find_secret
from tests.support import MESH, ROOT, Gateway, Upstream, mcp_client, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

# Unique per run, so finding it anywhere can only mean it leaked from this run.
TOKEN = "upstream-bearer-" + secrets.token_hex(12)
TOKEN_ENV = {"UPSTREAM_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("guarded"), required_bearer=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_key(gateway):
    return gateway.create_key("vault-tests")


def add_guarded(gateway: Gateway, name: str, url: str, *extra: str) -> str:
    return gateway.mesh("connections", "add", "--name", name, "--url", url, "--bearer-env", "UPSTREAM_TOKEN",
                        *extra, env=TOKEN_ENV)["id"]


def post(gateway: Gateway, connection_id: str, key: str, request_id: int = 1, http=httpx2) -> httpx2.Response:
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": f"call {request_id}"}}, request_id=request_id)
    return http.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, key), timeout=10)


def sqlite(gateway: Gateway) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{gateway.data_dir / 'mesh.db'}")


def test_the_guarded_upstream_refuses_calls_without_its_token(guarded):
    body = rpc("tools/list")
    assert httpx2.post(guarded.url, json=body, headers=mcp_headers(body)).status_code == 401
    assert httpx2.post(guarded.url, json=body, headers=mcp_headers(body, "mesh_not_the_token")).status_code == 401


async def test_an_upstream_requiring_a_bearer_secret_answers_through_the_gateway(gateway, guarded, api_key):
    before = len(guarded.requests())
    conn = add_guarded(gateway, "guarded", guarded.url)
    wait_for(lambda: post(gateway, conn, api_key).status_code == 200, timeout=3, what="the connection to route")
    async with mcp_client(gateway.mcp_url(conn), api_key) as client:
        assert (await client.call_tool("echo", {"text": "vaulted"})).content[0].text == "vaulted"

    seen = guarded.requests()[before:]
    assert seen and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in seen)
    for request in seen:  # the caller's own key and cookies never reach the upstream
        assert api_key not in json.dumps(request) and "cookie" not in request["headers"]
    listed = next(c for c in gateway.mesh("connections", "list") if c["id"] == conn)
    assert listed["credentials"] == {"bearer": "…" + TOKEN[-4:]}


def test_a_damaged_secret_gets_503_and_the_other_connections_keep_working(gateway, guarded, api_key):
    hurt = add_guarded(gateway, "hurt", guarded.url)
    fine = add_guarded(gateway, "fine", guarded.url)
    engine = sqlite(gateway)
    try:
        with engine.begin() as db:
            envelope = db.execute(sa.text("SELECT envelope FROM connection_secrets WHERE connection_id = :c"),
                                  {"c": hurt}).scalar()
            doc = json.loads(envelope)
            raw = bytearray(base64.urlsafe_b64decode(doc["ct"] + "=" * (-len(doc["ct"]) % 4)))
            raw[3] ^= 0x01
            doc["ct"] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
            db.execute(sa.text("UPDATE connection_secrets SET envelope = :e WHERE connection_id = :c"),
                       {"e": json.dumps(doc), "c": hurt})
    finally:
        engine.dispose()
    # Any change to the org publishes it again; the damaged secret is found then.
    gateway.mesh("connections", "set-secret", "fine", "--header", "X-Request-Source: mesh-tests")

    broken = wait_for(lambda: (r := post(gateway, hurt, api_key, request_id=9)).status_code == 503 and r,
                      timeout=3, what="the damaged connection to be marked broken")
    error = broken.json()
    assert error["id"] == 9 and error["error"]["code"] == -32005 and "'hurt'" in error["error"]["message"]
    assert not find_secret(broken.text, TOKEN)
    assert post(gateway, fine, api_key).status_code == 200
    assert f"connection {hurt} (hurt) is broken" in gateway.log()  # the data plane's account
    assert f"connection {hurt} is broken: the sealed value of bearer of {hurt} failed authentication" in \
        gateway.cli_output[-1]  # and the control plane's, from the `mesh` command that published
    status = gateway.mesh("vault", "status")
    assert status["unreadable"] == {f"{hurt} bearer": "AuthenticationFailed"}

    gateway.mesh("connections", "set-secret", hurt, "--bearer-env", "UPSTREAM_TOKEN", env=TOKEN_ENV)
    wait_for(lambda: post(gateway, hurt, api_key).status_code == 200, timeout=3,
             what="the connection to work again once its secret is set again")


def test_no_secret_appears_in_logs_metrics_health_or_command_output(gateway, guarded, api_key, tmp_path):
    # Credentialed traffic of every kind: working, a broken connection, an unreachable upstream.
    working = add_guarded(gateway, "scan-working", guarded.url, "--header", f"X-Api-Key: {TOKEN}-h")
    dead = add_guarded(gateway, "scan-dead", Upstream(tmp_path).url)
    wait_for(lambda: post(gateway, working, api_key).status_code == 200, timeout=3)
    answers = [post(gateway, working, api_key, i).text for i in range(5)]
    answers.append(wait_for(lambda: (r := post(gateway, dead, api_key)).status_code == 502 and r.text, timeout=3))
    base = gateway.base
    scanned = {
        "logs of every gateway process": gateway.log(),
        "mesh command output": "\n".join(gateway.cli_output),
        "/metrics": gateway.metrics().text,
        "/health": json.dumps(gateway.health()),
        "/api/health": httpx2.get(base + "/api/health").text,
        "error answers": "\n".join(answers[-1:]),
    }
    # There is no tracing yet: when spans arrive, their exporter's output belongs in this scan.
    assert "mesh_requests_total" in scanned["/metrics"]
    for where, text in scanned.items():
        for secret in (TOKEN, f"{TOKEN}-h", api_key):
            if secret == api_key and where == "mesh command output":
                continue  # `mesh keys create` prints the API key once, by design
            assert not find_secret(text, secret), f"{find_secret(text, secret)} of a secret in {where}"


def test_the_data_plane_never_holds_the_master_key(tmp_path, redis_url, guarded):
    master = base64.b64encode(generate_key()).decode()
    gateway = Gateway(tmp_path, redis_url, env={"ENCRYPTION_KEY": master}).start()
    try:
        conn = add_guarded(gateway, "env-keyed", guarded.url)
        key = gateway.create_key("env")
        wait_for(lambda: post(gateway, conn, key).status_code == 200, timeout=3)
        environment = Path(f"/proc/{gateway.plane_pid('data plane')}/environ").read_bytes()
        assert b"ENCRYPTION_KEY" not in environment and master.encode() not in environment
        assert not (gateway.data_dir / "mesh.key").exists()
        assert (gateway.data_dir / "dataplane.key").stat().st_mode & 0o777 == 0o600
    finally:
        assert gateway.stop() == 0


def test_mesh_up_refuses_a_bad_encryption_key_with_a_clear_message(tmp_path):
    gateway = Gateway(tmp_path)
    result = subprocess.run([MESH, "up"], env={**gateway.env, "ENCRYPTION_KEY": "hunter2-is-not-a-key"}, cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ENCRYPTION_KEY must be 32 bytes" in output and "openssl rand -base64 32" in output
    assert "Traceback" not in output and "hunter2" not in output


def test_rotation_under_load_fails_no_call_and_leaves_the_old_key_useless(tmp_path, redis_url, guarded):
    gateway = Gateway(tmp_path, redis_url).start()
    try:
        conns = [add_guarded(gateway, f"rot-{i}", guarded.url,
                             *[a for j in range(3) for a in ("--header", f"X-Extra-{j}: extra-{i}-{j}-{TOKEN}")])
                 for i in range(4)]
        key = gateway.create_key("load")
        for conn in conns:
            wait_for(lambda conn=conn: post(gateway, conn, key).status_code == 200, timeout=3)
        old = read_keyring_file(gateway.data_dir / "mesh.key")

        outcomes: list[tuple[int, bool]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx2.Client() as http:
                for i in range(20_000):  # bounded; stopped when the rotation is over
                    if stop.is_set():
                        return
                    response = post(gateway, conns[i % len(conns)], key, request_id=i, http=http)
                    outcomes.append((response.status_code, f"call {i}" in response.text))

        caller = threading.Thread(target=load)
        caller.start()
        wait_for(lambda: len(outcomes) >= 10, timeout=10, what="the load to start")
        rotation = subprocess.Popen([MESH, "vault", "rotate", "--batch-size", "3", "--grace", "1", "--json"],
                                    env=gateway.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        # A secret written while the rotation runs must end up under the new key too.
        late = add_guarded(gateway, "late", guarded.url)
        out, err = rotation.communicate(timeout=90)
        time.sleep(0.5)
        stop.set()
        caller.join(30)

        assert rotation.returncode == 0, err
        report = json.loads(out)
        assert report["retired_keys"] == [old.active] and report["unreadable"] == {}
        assert report["rewrapped"] >= 16
        assert len(outcomes) >= 50, "the load was not running during the rotation"
        failed = [o for o in outcomes if o != (200, True)]
        assert not failed, f"{len(failed)} of {len(outcomes)} calls failed during the rotation"

        new = read_keyring_file(gateway.data_dir / "mesh.key")
        assert set(new.keys) == {report["active_key"]} and old.active not in new.keys
        engine = sqlite(gateway)
        try:
            with engine.connect() as db:
                rows = db.execute(sa.text("SELECT s.org_id, s.connection_id, s.field, s.envelope, s.key_id, "
                                          "c.transport, c.url FROM connection_secrets s "
                                          "JOIN connections c ON c.id = s.connection_id")).all()
        finally:
            engine.dispose()
        assert len(rows) == 17
        for org_id, connection_id, field, envelope, key_id, transport, url in rows:
            context = vault_context(org_id, connection_id, field, origin=route_origin(transport, url))
            assert key_id == new.active and TOKEN in open_sealed(envelope, context, new).decode()
            with pytest.raises(EnvelopeError):
                open_sealed(envelope, context, old)

        # After the rotation: a change is published with the new key and every call still works.
        gateway.mesh("connections", "set-secret", conns[0], "--header", "X-After: rotation-done")
        for conn in (*conns, late):
            wait_for(lambda conn=conn: post(gateway, conn, key).status_code == 200, timeout=3)
        assert not find_secret(gateway.log() + err, TOKEN)
    finally:
        assert gateway.stop() == 0
