"""What a bridged upstream says to clients, delivered only to the client it concerns: progress,
log messages and server-to-client requests (sampling, elicitation) to the caller whose request
caused them; list-changed notifications to every client of the connection; resource updates to
the clients that subscribed.

The upstream is one ``ClientSession`` shared by every client of the connection (one child per
connection). Its wire says which request a progress notification is about (the bridge gives
each forwarded request a progress token of its own) but not which request a log message, a
sampling request or an elicitation belongs to: a stdio server sends those with no reference to
the request it is handling. So they are given to the caller of the one *interactive* request
(``tools/call``, ``prompts/get``, ``resources/read``, the methods the protocol lets ask for
input) in flight on the upstream; when several are in flight at once nobody can tell whose they
are, and the gateway fails closed: the upstream's request is answered with an error (its tool
usually reports that) and the log message is dropped, never sent to a client it may not concern.
The alternative, an upstream child per client, would make this exact at the price of a process
(tens of MB and a start-up of seconds for ``npx``) per client session and none for 2026-07-28
clients, which have no sessions.

Roots are not offered to the upstream (it is told the client does not support them): they describe
one client, and servers ask for them once per session and keep them (``server-everything``
does), so on a shared session one client's roots (its directories) would be shown to the next.
They need a child per client, which the bridge does not start.

How a server-to-client request reaches the caller depends on its generation: on a 2025 session
it is sent on the caller's response stream (``LegacyExchange``) and the caller's answer comes
back as a JSON-RPC response through the data plane; to a 2026-07-28 caller it is returned as an
``input_required`` result and the upstream request waits, held by ``RoundTrips``, until the
caller repeats its request with the answers (a new ``tools/call`` through the data plane,
authorized like the first) and the sealed ``requestState`` that finds it again.

This module does not forward requests (``mirror_server.py`` does) nor run the upstream
(``supervisor.py``).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, get_args

import anyio
import mcp_types as types
from mcp.server.connection import Connection, allowed_log_levels
from mcp.server.subscriptions import (InMemorySubscriptionBus, ListenHandler, PromptsListChanged, ResourcesListChanged,
                                      ToolsListChanged)
from mcp.server.validation import wants_sampling_tools
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.methods import INPUT_REQUIRED_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger("mesh.bridge")

# A 2026-07-28 caller has this long to come back with its answers before the upstream request
# waiting for them is cancelled (the SDK's sealed requestState expires at the same time).
ROUND_TRIP_TTL = 600.0
LOG_LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)  # least to most severe
_CHANGE_EVENTS = {types.ToolListChangedNotification: ToolsListChanged,
                  types.PromptListChangedNotification: PromptsListChanged,
                  types.ResourceListChangedNotification: ResourcesListChanged}
_LEVEL_KEY = "mesh.bridge.log_level"  # a 2025 client's logging/setLevel, in its Connection's state
_SUBSCRIBED_KEY = "mesh.bridge.subscribed"  # the URIs a 2025 client subscribed to


def connection_of(ctx) -> Connection:
    """The client connection a request came on. The runner does not expose it on the context
    yet (the SDK's own TODO L54); the per-request ``ServerSession`` holds it."""
    return ctx.session._connection  # noqa: SLF001


def is_modern(ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _ask_for(method: str, params: Any) -> tuple[types.InputRequest, Any, types.ClientCapabilities]:
    """The typed request, its result type and the capability a client needs to answer it."""
    if method == "sampling/createMessage":
        result = (types.CreateMessageResultWithTools if wants_sampling_tools(params.tools, params.tool_choice)
                  else types.CreateMessageResult)
        return (types.CreateMessageRequest(params=params), result,
                types.ClientCapabilities(sampling=types.SamplingCapability()))
    return types.ElicitRequest(params=params), types.ElicitResult, types.ClientCapabilities(
        elicitation=types.ElicitationCapability())


def _refusal(text: str) -> types.ErrorData:
    return types.ErrorData(code=types.INVALID_REQUEST, message=text)


class Exchange:
    """One client request on its way to the upstream, and the way back to its caller."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx  # the request being served now; None between a 2026-07-28 caller's rounds

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.ctx is not None:
            await self.ctx.session.report_progress(progress, total, message)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        ctx = self.ctx
        if ctx is None or params.level not in self._levels(ctx):
            return
        await ctx.session.send_notification(types.LoggingMessageNotification(params=params),
                                            related_request_id=ctx.request_id)

    @staticmethod
    def _levels(ctx) -> frozenset[str]:
        if is_modern(ctx):  # a per-request opt-in in the request's _meta
            return allowed_log_levels(ctx.protocol_version, ctx.meta)
        chosen = connection_of(ctx).state.get(_LEVEL_KEY, "debug")
        return frozenset(LOG_LEVELS[LOG_LEVELS.index(chosen):])

    async def ask(self, method: str, params: Any) -> Any:
        raise NotImplementedError


class LegacyExchange(Exchange):
    """A 2025 caller: the upstream's request goes on the caller's response stream."""

    async def ask(self, method: str, params: Any) -> Any:
        request, result_type, needed = _ask_for(method, params)
        session = self.ctx.session
        if not session.check_client_capability(needed):
            return _refusal(f"the client does not support {method}")
        try:
            return await session.send_request(request, result_type, metadata=ServerMessageMetadata(
                related_request_id=self.ctx.request_id))
        except MCPError as error:
            return error.error
        except NoBackChannelError:
            return _refusal(f"the client's request has no stream to carry {method}")


class RoundTrips(Exchange):
    """A 2026-07-28 caller's request, kept across its rounds: the upstream request runs in the
    background; each round waits until it finishes or asks for input, and answers with its
    result or with an ``input_required`` result naming what it waits for."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.state = secrets.token_urlsafe(24)  # sealed by the SDK's RequestStateBoundary on the way out
        self.capabilities = ctx.session.client_capabilities
        self.outcome: tuple[Any, BaseException | None] | None = None
        self._asks: dict[str, tuple[dict[str, Any], Any, anyio.Event, list]] = {}
        self._sent: set[str] = set()
        self._numbers = itertools.count(1)  # for the keys naming what the upstream asked
        self._changed = anyio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def finish(self, result: Any, error: BaseException | None) -> None:
        self.outcome = (result, error)
        self._wake()

    async def ask(self, method: str, params: Any) -> Any:
        request, result_type, needed = _ask_for(method, params)
        if not _supports(self.capabilities, needed):
            return _refusal(f"the client does not support {method}")
        key = f"{method.replace('/', '-')}-{next(self._numbers)}"
        answered, slot = anyio.Event(), []
        self._asks[key] = (request.model_dump(by_alias=True, mode="json", exclude_none=True), result_type,
                           answered, slot)
        self._wake()
        await answered.wait()
        return slot[0]

    def answer(self, responses: dict[str, Any] | None) -> None:
        """The caller's answers to what the last round asked (a missing one is refused)."""
        responses = responses if isinstance(responses, dict) else {}
        for key in list(self._sent):
            response = responses.get(key)
            result_type = self._asks[key][1]
            try:
                self._settle(key, result_type.model_validate(response, by_name=False) if response is not None
                             else _refusal("the client did not answer"))
            except ValueError:
                self._settle(key, _refusal("the client's answer is not valid"))
        self._sent.clear()

    def abandon(self) -> None:
        """The caller did not come back in time: what the upstream still waits for is refused."""
        for key in list(self._asks):
            self._settle(key, _refusal("the client did not answer in time"))

    def _settle(self, key: str, response: Any) -> None:
        _request, _result_type, answered, slot = self._asks.pop(key)
        slot.append(response)
        answered.set()

    async def round(self, ctx) -> Any:
        """Serve one of the caller's requests: the upstream's result, or what it waits for."""
        self.ctx = ctx
        try:
            while self.outcome is None and not self._asks:
                await self._changed.wait()
            await anyio.sleep(0)  # asks sent together arrive together
        finally:
            self.ctx = None
        if self.outcome is not None:
            result, error = self.outcome
            if error is not None:
                raise error
            return result
        self._sent = set(self._asks)
        return types.InputRequiredResult(
            input_requests={key: self._asks[key][0] for key in self._sent}, request_state=self.state)


def _supports(capabilities: types.ClientCapabilities | None, needed: types.ClientCapabilities) -> bool:
    if capabilities is None:
        return False
    return all(getattr(capabilities, name) is not None for name in needed.model_fields_set)


class Relay:
    """The upstream session's callbacks (``client_callbacks``) and where they deliver."""

    def __init__(self) -> None:
        self._interactive: list[Exchange] = []
        self._connections: dict[int, Connection] = {}  # 2025 clients, for list-changed and updates
        self._changes = InMemorySubscriptionBus()  # 2026-07-28 clients' subscriptions/listen streams
        self._listen = ListenHandler(self._changes)

    # -- the mirror server's side ---------------------------------------------------------------

    @contextmanager
    def forwarding(self, method: str, exchange: Exchange) -> Iterator[None]:
        """While a request is with the upstream, what it causes goes to ``exchange``."""
        interactive = method in INPUT_REQUIRED_METHODS
        if interactive:
            self._interactive.append(exchange)
        try:
            yield
        finally:
            if interactive:
                self._interactive.remove(exchange)

    async def __call__(self, ctx, call_next):
        """As the mirror server's middleware: note each 2025 client's connection from its first
        message (``initialize``) until it closes, so list-changed notifications reach it."""
        if not is_modern(ctx):
            connection = connection_of(ctx)
            if id(connection) not in self._connections:
                self._connections[id(connection)] = connection
                connection.exit_stack.callback(self._connections.pop, id(connection), None)
        return await call_next(ctx)

    async def listen(self, ctx, params: types.SubscriptionsListenRequestParams) -> types.SubscriptionsListenResult:
        """A 2026-07-28 client's stream of list-changed events. Resource URIs in its filter are
        not honoured (the acknowledgement leaves them out): the data plane does not authorize
        the URIs a listen request names, so updates about them could concern resources the
        caller may not read."""
        wanted = params.notifications.model_copy(update={"resource_subscriptions": None})
        return await self._listen(ctx, params.model_copy(update={"notifications": wanted}))

    @staticmethod
    def set_level(ctx, level: types.LoggingLevel) -> None:
        connection_of(ctx).state[_LEVEL_KEY] = level

    @staticmethod
    def subscriptions(ctx) -> set[str]:
        return connection_of(ctx).state.setdefault(_SUBSCRIBED_KEY, set())

    def subscribers(self, uri: str) -> int:
        return sum(uri in c.state.get(_SUBSCRIBED_KEY, ()) for c in self._connections.values())

    # -- the upstream session's side --------------------------------------------------------------

    def client_callbacks(self) -> dict[str, Any]:
        """Keyword arguments for the upstream ``ClientSession``: its server may ask for sampling
        and elicitation (not roots: see the module docstring), and what it sends is delivered here."""
        return {"sampling_callback": self._sampling, "elicitation_callback": self._elicitation,
                "logging_callback": self._logging, "message_handler": self._notification}

    def _sole(self) -> Exchange | None:
        return self._interactive[0] if len(self._interactive) == 1 else None

    async def _ask(self, method: str, params: Any) -> Any:
        exchange = self._sole()
        if exchange is None:
            why = "no client request is waiting for it" if not self._interactive else \
                "several clients' requests are in progress and the gateway cannot tell which one it is for"
            log.info("refused the upstream's %s: %s", method, why)
            return _refusal(f"{method} refused by the gateway: {why}")
        return await exchange.ask(method, params)

    async def _sampling(self, _context, params: types.CreateMessageRequestParams):
        return await self._ask("sampling/createMessage", params)

    async def _elicitation(self, _context, params: types.ElicitRequestParams):
        return await self._ask("elicitation/create", params)

    async def _logging(self, params: types.LoggingMessageNotificationParams) -> None:
        exchange = self._sole()
        if exchange is not None:
            await exchange.log(params)

    async def _notification(self, message) -> None:
        if isinstance(message, tuple(_CHANGE_EVENTS)):
            await self._changes.publish(_CHANGE_EVENTS[type(message)]())
            targets = list(self._connections.values())
        elif isinstance(message, types.ResourceUpdatedNotification):
            targets = [c for c in self._connections.values() if message.params.uri in c.state.get(_SUBSCRIBED_KEY, ())]
        else:
            return  # progress has its own callback, logs theirs; the rest concerns the upstream session
        data = message.model_dump(by_alias=True, mode="json", exclude_none=True)
        for connection in targets:
            await connection.notify(data["method"], data.get("params"))
