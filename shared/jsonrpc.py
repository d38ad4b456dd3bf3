"""The one JSON-RPC parser of MCP Mesh, and the error bodies the gateway answers with.

The data plane parses every MCP body exactly once, here, and later addons read the result from
the flow. Decisions are only ever taken on what this module returns, never on headers, and what
the upstream receives is this module's canonical re-serialization of the very object decided on
(``Body.canonical``), never the caller's bytes.

The parser is strict where JSON decoders disagree, so no upstream can read a message otherwise
than the gateway did: duplicate keys (Python keeps the last, others the first), keys that collide
when case-folded (Go's ``encoding/json`` matches field names case-insensitively, so
``{"method":"ping","Method":"tools/call"}`` is ``tools/call`` there), ``NaN`` / ``Infinity`` and
numbers too large for a double, lone UTF-16 surrogates and nesting too deep to parse are refused.

The error codes are the MCP SDK's own constants (``mcp_types``), so clients see the numbers the
protocol defines; so are the methods each protocol version has (``method_not_found``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    decode_header_value,
)
from mcp_types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.methods import CLIENT_REQUESTS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

# The headers that mirror the body, as the `mcp` SDK names them; each may appear once.
ROUTING_HEADERS = (MCP_PROTOCOL_VERSION_HEADER, MCP_METHOD_HEADER, MCP_NAME_HEADER)

__all__ = [
    "CREDENTIALS_UNAVAILABLE",
    "FORBIDDEN",
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "MCP_PROTOCOL_VERSION_HEADER",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SESSION_NOT_FOUND",
    "UNAUTHORIZED",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_UNAVAILABLE",
    "Body",
    "JsonRpcError",
    "Message",
    "error_body",
    "error_status",
    "method_not_found",
    "parse_body",
]

# The gateway's own errors, in JSON-RPC's implementation-defined range (-32000..-32099). One
# list, so no two answers share a number.
UNAUTHORIZED = -32001             # no valid API key (HTTP 401)
UPSTREAM_UNAVAILABLE = -32002     # the upstream could not be reached (502)
FORBIDDEN = -32003                # the caller's policy denies this tool, prompt, resource or method
NOT_FOUND = -32004                # no such connection, for this caller (404)
CREDENTIALS_UNAVAILABLE = -32005  # the connection's own credentials cannot be opened (503)
UPSTREAM_TIMEOUT = -32006         # the upstream did not start answering in time (504)
SESSION_NOT_FOUND = -32007        # an unknown session, or one bound to another caller (404)

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message as the gateway sees it.

    ``kind`` is "request" (has method and id), "notification" (method, no id) or "response"
    (result or error, answering a server-to-client request).
    """

    kind: str
    method: str | None
    id: RequestId
    params: dict[str, Any] | None
    raw: dict[str, Any]


class JsonRpcError(Exception):
    """A body the gateway refuses before it reaches any upstream."""

    def __init__(self, code: int, message: str, request_id: RequestId = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _message(obj: Any) -> Message:
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
    request_id = obj.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: method must be a non-empty string", request_id)
        params = obj.get("params")
        if params is not None and not isinstance(params, dict):
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: params must be an object", request_id)
        kind = "notification" if "id" not in obj else "request"
        return Message(kind, method, request_id, params, obj)
    if "result" in obj or "error" in obj:
        return Message("response", None, request_id, None, obj)
    raise JsonRpcError(INVALID_REQUEST, "Invalid Request: neither a request nor a response", request_id)


@dataclass(frozen=True, slots=True)
class Body:
    """An HTTP body as the gateway read it: its messages (several for a batch) and the bytes that
    go upstream instead of the caller's (compact UTF-8 JSON of exactly what was parsed)."""

    messages: list[Message]
    canonical: bytes


TOO_DEEP = "Parse error: the JSON is nested too deeply"


class _Refused(ValueError):
    """Raised inside the decoder's hooks; becomes a JsonRpcError."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    size = len(obj)
    if size != len(pairs):
        raise _Refused(INVALID_REQUEST, "Invalid Request: an object has the same key twice")
    # Unicode case folding (Go folds "ſ" to "s" and the Kelvin sign to "k"); lower() is the same
    # for ASCII keys, and cheaper.
    if size > 1 and len({key.lower() if key.isascii() else key.casefold() for key in obj}) != size:
        raise _Refused(INVALID_REQUEST, "Invalid Request: an object has keys that differ only in letter case")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(PARSE_ERROR, "Parse error: a number is too large")
    return value


def _no_constant(name: str):
    raise _Refused(PARSE_ERROR, f"Parse error: {name} is not JSON")


_STRICT = json.JSONDecoder(object_pairs_hook=_strict_object, parse_float=_finite_float, parse_constant=_no_constant)
# Parsed JSON cannot be circular: no need for the encoder to look.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def loads_strict(data: bytes | str) -> Any:
    """JSON as every decoder reads it alike, or ``JsonRpcError`` (-32700 for what is not JSON,
    -32600 for duplicate or case-colliding keys)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return _STRICT.decode(text)
    except _Refused as refusal:
        raise JsonRpcError(refusal.code, refusal.message) from None
    except RecursionError:
        raise JsonRpcError(PARSE_ERROR, TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise JsonRpcError(PARSE_ERROR, "Parse error: the body is not valid JSON") from None


def dumps_canonical(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Refuses (-32700) what cannot be written as UTF-8: a lone surrogate
    (``"\\ud800"``), which decoders would each replace or keep in their own way."""
    try:
        return _CANONICAL.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRpcError(PARSE_ERROR, "Parse error: a string holds a lone UTF-16 surrogate") from None
    except RecursionError:
        raise JsonRpcError(PARSE_ERROR, TOO_DEEP) from None


def parse_body(body: bytes) -> Body:
    """Parse an HTTP body into its JSON-RPC messages (a batch gives several) and their canonical
    bytes.

    Raises ``JsonRpcError`` with ``PARSE_ERROR`` for bytes that are not JSON (or JSON that
    decoders read differently) and ``INVALID_REQUEST`` for JSON that is not JSON-RPC 2.0, for
    ambiguous keys, and for a batch in which two requests share an id (their answers could not be
    told apart, nor filtered for the right request).
    """
    obj = loads_strict(body)
    if isinstance(obj, list):
        if not obj:
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: empty batch")
        messages = [_message(item) for item in obj]
        ids = [m.id for m in messages if m.kind == "request"]
        if len(ids) != len({(type(i), i) for i in ids}):
            raise JsonRpcError(INVALID_REQUEST, "Invalid Request: two requests in the batch share an id")
    else:
        messages = [_message(obj)]
    return Body(messages, dumps_canonical(obj))


def error_body(code: int, message: str, request_id: RequestId = None, data: Any = None) -> bytes:
    """A JSON-RPC error response, serialised. ``message`` must never carry a secret."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def error_status(code: int) -> int:
    """The HTTP status of an answer carrying JSON-RPC error ``code``, as the `mcp` SDK maps it
    (-32601 → 404, malformed requests → 400); 200 for every other code, the gateway's own
    refusals included."""
    return ERROR_CODE_HTTP_STATUS.get(code, 200)


def method_not_found(message: Message, version_header: str | None) -> str | None:
    """Why a request names a method its protocol version does not have, for the versions that
    answer it with -32601 Method not found and HTTP 404 (2026-07-28, which removed ``initialize``,
    ``ping``, ``logging/setLevel``, ``resources/subscribe`` and ``resources/unsubscribe``); None for
    any other request. The methods of each version are the `mcp` SDK's (``CLIENT_REQUESTS``), so a
    method unknown there is unknown here: refused, never forwarded.

    The version is the ``MCP-Protocol-Version`` header's, as the SDK's servers route on it, or,
    without that header, the one in ``params._meta``. Requests of the 2025 versions (the
    ``initialize`` handshake) are left to the policy (``shared.policy.target_of``), which refuses an
    unknown method there with its -32003 as before."""
    if message.kind != "request":
        return None
    version = version_header
    if version is None:
        meta = (message.params or {}).get("_meta")
        version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
    if version not in MODERN_PROTOCOL_VERSIONS or (message.method, version) in CLIENT_REQUESTS:
        return None
    return f"Method not found: {message.method!r} is not a method of MCP {version}"


def header_mismatch(messages: list[Message], get_all: Callable[[str], list[str]]) -> str | None:
    """Why the ``Mcp-Method`` / ``Mcp-Name`` headers disagree with the body, or None if they agree.

    Uses the `mcp` SDK's own definitions (which method mirrors which field, how header values are
    encoded), so the gateway and SDK servers judge alike. Headers are never trusted for decisions;
    this check only stops a header from telling an intermediary something the body does not say.
    ``Mcp-Param-*`` headers mirror tool arguments by schema and are left to the upstream: no
    decision of the gateway rests on them. ``get_all(name)`` gives every value of a header
    (case-insensitive), so a header sent twice is caught as the SDK's servers catch it.
    """
    found = {}
    for name in ROUTING_HEADERS:
        values = get_all(name)
        if len(values) > 1:
            return f"the {name} header appears more than once"
        found[name] = values[0] if values else None
    method_header, name_header = found[MCP_METHOD_HEADER], found[MCP_NAME_HEADER]
    if method_header is None and name_header is None:
        return None
    if len(messages) != 1 or messages[0].kind == "response":
        return "Mcp-Method and Mcp-Name describe a single request, and the body is not one"
    message = messages[0]
    if method_header is not None and method_header != message.method:
        return f"the Mcp-Method header says {method_header!r} and the body says {message.method!r}"
    field = NAME_BEARING_METHODS.get(message.method)
    body_name = (message.params or {}).get(field) if field else None
    if name_header is None:
        return f"Mcp-Name is missing for {message.method}" if body_name is not None else None
    if field is None:
        return f"Mcp-Name was sent, and {message.method} names nothing"
    if decode_header_value(name_header) != body_name:
        return f"the Mcp-Name header does not match the body's {field!r}"
    return None
