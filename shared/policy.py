"""The policy model and its one evaluator, used by the data plane on every message and by the
control plane to show effective permissions.

A permission document (a role's, or an API key's narrowing scope)::

    {
      "tools":     {"conn_abc": ["SEND_EMAIL", "LIST_*"], "*": ["search"]},
      "prompts":   {"*": ["*"]},
      "resources": {"conn_abc": ["file:///docs/*"]},
      "manage":    ["connections.write", "members.manage"]
    }

Keys of a kind's mapping are connection ids or ``*`` (every connection); values are names,
where ``*`` matches any run of characters (``LIST_*``, ``*_EMAIL``, ``*``). A bare mapping
``{"conn_abc": [...], "*": [...]}`` is shorthand for ``{"tools": {...}}``. A kind a document
does not mention allows nothing of that kind.

A principal's ``Policy`` is a list of such documents that must all allow (its role, then its
key's scope documents if the key was narrowed: ``scope_layers``), so a narrowed key can never
exceed its user's role, nor a key made through a narrowed key the key that made it. That list is
built in one place, ``principal_documents``, for the data plane's snapshot and the control
plane's checks and views alike, so they cannot disagree; what cannot be decided allows nothing.

Compiled once per snapshot: exact names go in sets; wildcard patterns are indexed by their
literal head (the text before the first ``*``) and matched without backtracking: the head and
tail are compared in place, and each literal between two ``*`` is searched once, leftmost, from
where the previous one ended (``re``'s literal search, which is linear: KMP). Taking the
leftmost occurrence is always right for ``*``-only patterns, so a pattern reads the name once:
a decision costs O(len(name)) per wildcard pattern it has to try, never exponential time (as
``fnmatch`` or a regex of ``.*`` does on ``*a*a*a*a*a*b`` against ``aaaa…``).

Limits, checked by ``normalize`` with a message naming the pattern: a document holds at most
``MAX_PATTERNS`` names; a pattern has at most ``MAX_WILDCARDS`` ``*``; patterns and the names
decided on are at most ``MAX_NAME_LENGTH[kind]`` characters (256 for tools and prompts, twice
the MCP spec's 128 for tool names; 2,048 for resource URIs). A longer name is never allowed.

Resource URIs are decided on their canonical form (``canonical_uri``): scheme and host in lower
case, percent-escapes with upper-case hex digits; nothing else changes (``%64ocs`` stays
``%64ocs``, so it does not match ``docs``). Both forms mean the same to every reader, which
matters because the upstream receives the URI as the client wrote it. A URI that readers may
resolve differently is refused, whatever the policy allows (fail closed): ``.`` or ``..``
segments, raw or percent-encoded (``%2e%2e``, ``.%2E``, ``%252e``), also in the query or
fragment, or after Unicode compatibility folding (``．．``), or made of dots and spaces only;
``%2F`` or ``%5C`` in the path; backslashes, raw or encoded; control characters; empty path
segments (``//``) and drive letters after the path's start; malformed or non-UTF-8
percent-escapes; escapes nested more than three deep; no scheme. Resource patterns are
canonicalized the same way; ``normalize`` refuses those that could only match refused URIs, and
a host holding ``*`` written in upper case (it would never match).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

KINDS = ("tools", "prompts", "resources")
ANY = "*"

MANAGE_PERMISSIONS = (
    "org.update",           # rename the org
    "org.delete",           # delete the org
    "members.read",         # list members and invitations
    "members.manage",       # invite, remove, change roles
    "roles.manage",         # create, change, delete custom roles
    "connections.read",     # list connections and their (masked) settings
    "connections.write",    # create, change, delete, test connections
    "keys.manage",          # list and revoke other members' API keys
    "audit.read",           # read the audit trail
    "gateway.read",         # see the data planes' installed snapshot versions and refusals for the org
)

FULL_ACCESS = {kind: {ANY: [ANY]} for kind in KINDS}
BUILTIN_ROLES: dict[str, dict[str, Any]] = {
    "owner": {**FULL_ACCESS, "manage": list(MANAGE_PERMISSIONS)},
    "admin": {**FULL_ACCESS, "manage": [p for p in MANAGE_PERMISSIONS if p != "org.delete"]},
    "member": {**FULL_ACCESS, "manage": ["connections.read", "members.read"]},
}

MAX_PATTERNS = 1000
MAX_WILDCARDS = 8
# Names longer than this are never allowed, and patterns may not be longer either. Tool names
# should be 1-128 characters (MCP spec); resource URIs can be long.
MAX_NAME_LENGTH = {"tools": 256, "prompts": 256, "resources": 2048}


class PolicyError(ValueError):
    """A permission document that cannot be used; the message says what is wrong."""


def normalize(doc: Any) -> dict[str, Any]:
    """Validate a permission document and return it in its full form (every kind present)."""
    if not isinstance(doc, Mapping):
        raise PolicyError("permissions must be a JSON object")
    if doc and not (set(doc) & {*KINDS, "manage"}):
        doc = {"tools": doc}  # the bare shorthand
    unknown = set(doc) - {*KINDS, "manage"}
    if unknown:
        raise PolicyError(f"unknown permission kinds: {', '.join(sorted(unknown))}; expected tools, prompts, "
                          "resources, manage")
    out: dict[str, Any] = {}
    count = 0
    for kind in KINDS:
        mapping = doc.get(kind, {})
        if not isinstance(mapping, Mapping):
            raise PolicyError(f"{kind} must map connection ids (or *) to lists of names")
        clean: dict[str, list[str]] = {}
        for connection, names in mapping.items():
            if not isinstance(connection, str) or not connection or len(connection) > 64:
                raise PolicyError(f"{kind}: {connection!r} is not a connection id or *")
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise PolicyError(f"{kind}.{connection} must be a list of non-empty names")
            count += len(names)
            if count > MAX_PATTERNS:
                raise PolicyError(f"a permission document may hold at most {MAX_PATTERNS} names")
            for name in names:
                _check_pattern(kind, connection, name)
            clean[connection] = sorted(set(names))
        out[kind] = clean
    manage = doc.get("manage", [])
    if not isinstance(manage, list) or not all(isinstance(p, str) for p in manage):
        raise PolicyError("manage must be a list of permission names")
    bad = sorted(set(manage) - set(MANAGE_PERMISSIONS) - {ANY})
    if bad:
        raise PolicyError(f"unknown management permissions: {', '.join(bad)}")
    out["manage"] = sorted(MANAGE_PERMISSIONS) if ANY in manage else sorted(set(manage))
    return out


def _check_pattern(kind: str, connection: str, pattern: str) -> None:
    if len(pattern) > MAX_NAME_LENGTH[kind]:
        raise PolicyError(f"{kind}.{connection}: {pattern[:40]!r}… is longer than {MAX_NAME_LENGTH[kind]} characters, "
                          f"the limit for {kind}")
    if pattern.count(ANY) > MAX_WILDCARDS:
        raise PolicyError(f"{kind}.{connection}: {pattern!r} has {pattern.count(ANY)} wildcards; a pattern may "
                          f"have at most {MAX_WILDCARDS}")
    if kind == "resources":
        try:
            canonical_uri(pattern, pattern=True)
        except UnsafeUri as refusal:
            raise PolicyError(f"resources.{connection}: {pattern!r} is refused: {refusal}") from None


# -- resource URIs -------------------------------------------------------------------------------

class UnsafeUri(ValueError):
    """A resource URI that upstreams may resolve differently from how it reads; the message says why."""


# scheme ":" ["//" authority] path ["?" query] ["#" fragment], every part optional here (RFC 3986
# appendix B); the checks below decide what is acceptable.
_PARTS = re.compile(r"(?:([A-Za-z][A-Za-z0-9+.-]*):)?(?://([^/?#]*))?([^?#]*)(.*)", re.DOTALL)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Controls and backslashes anywhere; in the path, an encoded / or \ as well.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")
_UNSAFE_IN_PATH = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]|%(?:2[Ff]|5[Cc])")
# A piece of dots (and spaces: Windows drops trailing ones) between two places where a reader of
# a path, query or fragment may cut the text. Possessive, so it never backtracks.
_DOT_SEGMENT = re.compile(r"[/\\?#&=;:] *+\.[. ]*+(?=\Z|[/\\?#&=;:])")  # searched in "/" + text
_DRIVE_AFTER_START = re.compile(r"/[^/]*/[A-Za-z]:(?:/|\Z)")
# The common case, decided by one match: a URI in canonical form (lower-case scheme and host) with
# nothing to refuse (its path segments start with a letter, digit, "_", "~" or "-", so none is
# made of dots; no "%", "\\", ":", "?", "#" or control character). Possessive: no backtracking.
_PLAIN = re.compile(r"[a-z][a-z0-9+.-]*+:(?://(?:[a-z0-9-]++(?:\.[a-z0-9-]++)*+(?::[0-9]++)?+)?+)?+"
                    r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*+)*+")
_DECODINGS = 3  # percent-decoding rounds checked: an upstream that decodes twice is not unheard of
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def canonical_uri(uri: str, *, pattern: bool = False) -> str:
    """``uri`` as the policy decides on it, or ``UnsafeUri`` when it must be refused (see the module
    docstring). With ``pattern``, ``*`` is an ordinary character and no scheme is needed (``*``,
    ``*.pdf``); a host holding ``*`` must already be in lower case (``*`` may stand for more than
    a host, so it cannot be lowered safely)."""
    return uri if _PLAIN.fullmatch(uri) else _canonical(uri, pattern)


def _canonical(uri: str, pattern: bool) -> str:
    if _MALFORMED_ESCAPE.search(uri):
        raise UnsafeUri("a % is not followed by two hex digits")
    scheme, authority, path, rest = _PARTS.fullmatch(uri).groups()
    if scheme is None and not pattern:
        raise UnsafeUri("it has no scheme (such as file: or https:)")
    if authority:
        _refuse_ambiguity(authority, _UNSAFE_IN_PATH)
    # A pattern without a scheme (*, *.pdf) has no path whose shape could be judged.
    _refuse_ambiguity(path, _UNSAFE_IN_PATH, is_path=scheme is not None)
    if rest:
        _refuse_ambiguity(rest, _UNSAFE)
    if scheme is None:  # nothing to put in canonical form
        return _upper_escapes(uri)
    canonical = scheme.lower() + ":"  # ASCII, as _PARTS matched it
    if authority is not None:
        userinfo, at, host = authority.rpartition("@")
        lowered = host.lower() if host.isascii() else host.translate(_ASCII_LOWER)
        if pattern and ANY in host and lowered != host:
            raise UnsafeUri("a host with * in a pattern must be written in lower case (hosts are compared in "
                            "lower case)")
        canonical += "//" + userinfo + at + lowered
    return _upper_escapes(canonical + path + rest)


def _upper_escapes(text: str) -> str:
    return _ESCAPE.sub(lambda escape: escape.group().upper(), text) if "%" in text else text


def _refuse_ambiguity(text: str, unsafe: re.Pattern, is_path: bool = False) -> None:
    """Refuse ``text`` (a URI's authority, path, or query and fragment) if it holds something
    readers disagree on, as it is or as a reader may turn it: Unicode compatibility folding
    (NFKC, which makes "．．" of "..", "／" of "/") and percent-decoding, in any order, up to
    ``_DECODINGS`` times."""
    for _ in range(_DECODINGS + 1):
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        found = unsafe.search(text)
        if found is not None:
            what = found.group()
            raise UnsafeUri("it contains a backslash, a path separator to some upstreams" if what == "\\" else
                            "it contains an encoded / or \\ (%2F, %5C) before its query, which some upstreams "
                            "decode into a separator" if what.startswith("%") else "it contains a control character")
        if _DOT_SEGMENT.search("/" + text):
            raise UnsafeUri("it has a . or .. segment (possibly percent-encoded), which could lead outside "
                            "the allowed path")
        if is_path and "//" in text:
            # Readers that join the rest of a path to a base directory take "/docs//etc" as "/etc".
            raise UnsafeUri("its path has an empty segment (//)")
        if is_path and _DRIVE_AFTER_START.search(text):
            raise UnsafeUri("its path has a drive letter (C:) after its start")
        if "%" not in text:
            return
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise UnsafeUri("its percent-escapes do not decode as UTF-8") from None
        if decoded == text:
            return
        text = decoded
    raise UnsafeUri(f"it is percent-encoded more than {_DECODINGS} times over")


# -- matching names ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Glob:
    """A pattern with ``*``: the literal head (before the first ``*``), the tail (after the last)
    and the literals between, each searched for once, leftmost, with no backtracking."""

    head: str
    tail: str
    middle: tuple[re.Pattern, ...]  # re.escape'd literals: re searches a literal in linear time
    shortest: int  # the length of the shortest name it matches

    @classmethod
    def of(cls, pattern: str) -> "Glob":
        head, *middle, tail = pattern.split(ANY)
        middle = [m for m in middle if m]
        return cls(head, tail, tuple(re.compile(re.escape(m)) for m in middle),
                   len(head) + len(tail) + sum(map(len, middle)))

    def matches(self, name: str) -> bool:
        if len(name) < self.shortest or not name.startswith(self.head) or not name.endswith(self.tail):
            return False
        position, end = len(self.head), len(name) - len(self.tail)
        for literal in self.middle:
            found = literal.search(name, position, end)
            if found is None:
                return False
            position = found.end()
        return True


@dataclass(frozen=True, slots=True)
class NameSet:
    """Names allowed on one connection (or on all): exact ones in a set, patterns with ``*`` by the
    length and text of their head; ``True`` stands for ``HEAD*`` (every name with that head)."""

    exact: frozenset[str]
    heads: tuple[tuple[int, dict[str, "tuple[Glob, ...] | bool"]], ...]
    everything: bool
    wild: bool  # any pattern with * at all
    longest: int  # a longer name is never in the set, whatever the patterns

    @classmethod
    def of(cls, patterns: Iterable[str], longest: int) -> "NameSet":
        patterns = set(patterns)
        by_head: dict[int, dict[str, list[Glob]]] = {}
        for pattern in patterns:
            if ANY in pattern:
                glob = Glob.of(pattern)
                by_head.setdefault(len(glob.head), {}).setdefault(glob.head, []).append(glob)
        heads = tuple(
            (length, {head: True if any(not g.tail and not g.middle for g in globs) else tuple(globs)
                      for head, globs in groups.items()})
            for length, groups in sorted(by_head.items()))
        return cls(frozenset(p for p in patterns if ANY not in p), heads, ANY in patterns, bool(heads), longest)

    def __contains__(self, name: str) -> bool:
        # Exact names are never longer than the limit (normalize refuses such patterns).
        return name in self.exact or (self.wild and len(name) <= self.longest and self._matches(name))

    def _matches(self, name: str) -> bool:
        if self.everything:
            return True
        for length, groups in self.heads:
            globs = groups.get(name[:length])
            if globs is True:
                return True
            if globs is not None and any(glob.matches(name) for glob in globs):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Layer:
    """One compiled permission document."""

    kinds: dict[str, tuple[NameSet | None, dict[str, NameSet]]]  # kind -> (on every connection, per connection)
    manage: frozenset[str]

    @classmethod
    def compile(cls, doc: Mapping[str, Any]) -> "Layer":
        doc = normalize(doc)
        kinds = {}
        for kind in KINDS:
            mapping = doc[kind]
            if kind == "resources":  # decided on canonical URIs, so matched against canonical patterns
                mapping = {c: [canonical_uri(n, pattern=True) for n in names] for c, names in mapping.items()}
            longest = MAX_NAME_LENGTH[kind]
            everywhere = NameSet.of(mapping[ANY], longest) if ANY in mapping else None
            kinds[kind] = (everywhere, {c: NameSet.of(names, longest) for c, names in mapping.items() if c != ANY})
        return cls(kinds, frozenset(doc["manage"]))

    def allows(self, kind: str, connection_id: str, name: str) -> bool:
        everywhere, per_connection = self.kinds[kind]
        if everywhere is not None and name in everywhere:
            return True
        names = per_connection.get(connection_id)
        return names is not None and name in names


class Policy:
    """What one principal may do: every layer must allow."""

    __slots__ = ("layers", "source")

    def __init__(self, docs: Iterable[Mapping[str, Any]]):
        self.source = list(docs)  # as given, so an unchanged policy can be recognised and reused
        self.layers = tuple(Layer.compile(doc) for doc in self.source)
        if not self.layers:
            raise PolicyError("a policy needs at least one permission document")

    def allows(self, kind: str, connection_id: str, name: str) -> bool:
        if kind == "resources":  # decided on the canonical URI; one that must be refused never is allowed
            if len(name) > MAX_NAME_LENGTH[kind]:
                return False
            try:
                name = canonical_uri(name)
            except UnsafeUri:
                return False
        for layer in self.layers:
            if not layer.allows(kind, connection_id, name):
                return False
        return True

    def covers(self, kind: str, connection_id: str, pattern: str) -> bool:
        """Whether every name ``pattern`` stands for is allowed, judged conservatively: the pattern
        itself, its ``*`` read as a character, must be allowed (``LIST_*`` is covered by ``LIST_*``
        or ``*``, not by ``LIST_USERS``). Sound: a pattern's literal pieces lie between the
        pattern's own ``*``, so whatever those become, the same pieces still match."""
        if kind == "resources":
            try:
                pattern = canonical_uri(pattern, pattern=True)
            except UnsafeUri:
                return False
        if len(pattern) > MAX_NAME_LENGTH[kind]:
            return False
        return all(layer.allows(kind, connection_id, pattern) for layer in self.layers)

    def may_manage(self, permission: str) -> bool:
        return all(permission in layer.manage for layer in self.layers)


def scope_layers(scope: Any) -> list[dict[str, Any]]:
    """An API key's narrowing scope as stored, as the list of documents that must all allow:
    ``None`` (not narrowed) → ``[]``; one document (keys made before scopes could stack) → that
    one; a list (or tuple) of documents (a key made through a narrowed key: its scope, then the
    new one) → each. Every document is validated (``PolicyError`` otherwise)."""
    if scope is None:
        return []
    if isinstance(scope, Mapping):
        return [normalize(scope)]
    if isinstance(scope, list | tuple) and scope:
        return [normalize(doc) for doc in scope]
    raise PolicyError("a key's scope must be a permission document or a non-empty list of them")


# What a principal whose permissions cannot be decided gets: nothing (fail closed).
DENY_ALL: dict[str, Any] = normalize({})


def readable_scope(scope: Any) -> list[dict[str, Any]]:
    """``scope_layers``, failing closed: a stored scope that cannot be read narrows to nothing."""
    try:
        return scope_layers(scope)
    except PolicyError:
        return [DENY_ALL]


def principal_documents(role: str, custom_roles: Mapping[str, Mapping[str, Any]],
                        scope: Any = None) -> list[dict[str, Any]]:
    """The one way a principal's effective policy is built, for the data plane's snapshot and the
    control plane's checks and views alike: the documents that must all allow for a member
    holding ``role`` (a built-in name or a custom role id of ``custom_roles``), acting through a
    key narrowed by ``scope`` (as ``ApiKey.scope`` stores it; ``None``: not narrowed). Fails
    closed, the same way for every reader: a role that does not resolve, or a document that
    does not validate, allows nothing (``DENY_ALL`` in its place)."""
    try:
        base = normalize(role_document(role, custom_roles))
    except PolicyError:
        base = DENY_ALL
    return [base, *readable_scope(scope)]


def role_document(role: str, custom_roles: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """The permission document of a built-in role name or a custom role id."""
    if role in BUILTIN_ROLES:
        return BUILTIN_ROLES[role]
    if role in custom_roles:
        return custom_roles[role]
    raise PolicyError(f"unknown role {role!r}")


# -- what a JSON-RPC message asks for ---------------------------------------------------------

# Methods that name no tool, prompt or resource, and pass as they are.
PASS_METHODS = frozenset({
    "initialize", "ping", "server/discover", "logging/setLevel", "subscriptions/listen",
})
# Tasks (``tasks/get``, ``tasks/result``, ``tasks/list``, ``tasks/cancel``, and requests asking
# for one with ``params.task``) are refused: a task id is not bound to the key that created it (as
# session ids are, in the data plane), so one key could read or cancel another's results.
TASKS_REFUSED = ("tasks are not available through the gateway yet: a task's results are not yet "
                 "bound to the API key that started it")
# Methods whose answers list tools, prompts or resources; the answer is filtered per caller.
LIST_METHODS = {
    "tools/list": ("tools", "tools", "name"),
    "prompts/list": ("prompts", "prompts", "name"),
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resources", "resourceTemplates", "uriTemplate"),
}
_TARGETS = {
    "tools/call": ("tools", "name"),
    "prompts/get": ("prompts", "name"),
    "resources/read": ("resources", "uri"),
    "resources/subscribe": ("resources", "uri"),
    "resources/unsubscribe": ("resources", "uri"),
}
_LABELS = {"tools": "tool", "prompts": "prompt", "resources": "resource"}


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    name: str

    @property
    def label(self) -> str:
        return _LABELS[self.kind]


class Unclassified(Exception):
    """A method the gateway does not know how to decide on; refused (fail closed)."""


def target_of(method: str, params: Mapping[str, Any] | None) -> Target | None:
    """The tool, prompt or resource a request acts on; ``None`` for one that acts on none. A name
    no policy could allow (too long, or a resource URI that is refused) is ``Unclassified``, with
    a reason a person understands."""
    if method.startswith("tasks/") or (isinstance(params, Mapping) and "task" in params):
        raise Unclassified(TASKS_REFUSED)
    if method in PASS_METHODS or method in LIST_METHODS or method.startswith("notifications/"):
        return None
    params = params or {}
    if method in _TARGETS:
        kind, field = _TARGETS[method]
        name = params.get(field)
        if not isinstance(name, str):
            raise Unclassified(f"{method} needs a string params.{field}")
        return _decidable(Target(kind, name))
    if method == "completion/complete":
        ref = params.get("ref")
        ref = ref if isinstance(ref, Mapping) else {}
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            return _decidable(Target("prompts", ref["name"]))
        if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            return _decidable(Target("resources", ref["uri"]))
        raise Unclassified("completion/complete needs a prompt or resource reference")
    raise Unclassified(f"method {method!r} is not allowed through the gateway")


def _decidable(target: Target) -> Target:
    limit = MAX_NAME_LENGTH[target.kind]
    if len(target.name) > limit:
        noun = "URIs" if target.kind == "resources" else "names"
        raise Unclassified(f"{target.label} {noun} are limited to {limit} characters; this one has {len(target.name)}")
    if target.kind == "resources":
        try:
            canonical_uri(target.name)
        except UnsafeUri as refusal:
            raise Unclassified(f"resource URI {target.name!r} is refused: {refusal}") from None
    return target


def filter_listing(policy: Policy, connection_id: str, method: str, result: Any) -> Any:
    """A ``*/list`` result with only the entries ``policy`` allows on ``connection_id``. Resource
    entries are decided like requests for them: an unsafe URI is left out whatever the policy; a
    URI template (``file:///docs/{name}``) is decided on its text as written."""
    kind, field, key = LIST_METHODS[method]
    if not isinstance(result, dict) or not isinstance(result.get(field), list):
        return result
    kept = [entry for entry in result[field]
            if isinstance(entry, dict) and isinstance(entry.get(key), str) and policy.allows(kind, connection_id, entry[key])]
    return {**result, field: kept}
