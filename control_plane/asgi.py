"""The control plane as one ASGI application: the management MCP server at ``/mcp`` (the `mcp`
SDK's Streamable HTTP app, stateless so any worker can answer any request) and the Flask app
(API, web UI) for every other path. gunicorn runs it with uvicorn workers (``mesh up``)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from a2wsgi import WSGIMiddleware
from mcp.server.auth.settings import AuthSettings
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from control_plane.app import create_app
from control_plane.management.auth import ApiKeyVerifier
from control_plane.management.server import build_server
from control_plane.settings import Settings


def create_asgi_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    flask_app = create_app(settings)
    management = build_server(flask_app)
    public = f"http://127.0.0.1:{settings.port}"
    mcp_app = management.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True,
        # API keys have no audience: the verifier itself decides what a key may reach.
        auth=AuthSettings(issuer_url=public, resource_server_url=f"{public}/mcp", validate_token_resource=False),
        token_verifier=ApiKeyVerifier(flask_app),
    )

    @asynccontextmanager
    async def lifespan(_app):
        async with management.session_manager.run():  # the SDK's transport needs its task group
            yield

    return Starlette(
        routes=[Route("/mcp", endpoint=mcp_app, methods=["GET", "POST", "DELETE"]),
                Mount("/", app=WSGIMiddleware(flask_app))],
        lifespan=lifespan,
    )
