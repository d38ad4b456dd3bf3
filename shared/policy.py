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
exceed its user's role, nor a key made through a narrowed key the key that made it.

Compiled once per snapshot: exact names go in sets and wildcard patterns into one regular
expression per (kind, connection), so a decision costs a few dict look-ups and at most two
regex matches per layer, whatever the number of keys, roles or connections.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
)

FULL_ACCESS = {kind: {ANY: [ANY]} for kind in KINDS}
BUILTIN_ROLES: dict[str, dict[str, Any]] = {
    "owner": {**FULL_ACCESS, "manage": list(MANAGE_PERMISSIONS)},
    "admin": {**FULL_ACCESS, "manage": [p for p in MANAGE_PERMISSIONS if p != "org.delete"]},
    "member": {**FULL_ACCESS, "manage": ["connections.read", "members.read"]},
}

MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 256


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
            if any(len(n) > MAX_PATTERN_LENGTH for n in names):
                raise PolicyError(f"{kind}.{connection}: names are limited to {MAX_PATTERN_LENGTH} characters")
            count += len(names)
            clean[connection] = sorted(set(names))
        out[kind] = clean
    if count > MAX_PATTERNS:
        raise PolicyError(f"a permission document may hold at most {MAX_PATTERNS} names")
    manage = doc.get("manage", [])
    if not isinstance(manage, list) or not all(isinstance(p, str) for p in manage):
        raise PolicyError("manage must be a list of permission names")
    bad = sorted(set(manage) - set(MANAGE_PERMISSIONS) - {ANY})
    if bad:
        raise PolicyError(f"unknown management permissions: {', '.join(bad)}")
    out["manage"] = sorted(MANAGE_PERMISSIONS) if ANY in manage else sorted(set(manage))
    return out


def _pattern_regex(patterns: Iterable[str]) -> re.Pattern | None:
    wild = [p for p in patterns if ANY in p]
    if not wild:
        return None
    return re.compile("|".join(".*".join(re.escape(part) for part in p.split(ANY)) for p in wild), re.DOTALL)


@dataclass(frozen=True, slots=True)
class NameSet:
    """Names allowed on one connection (or on all): exact ones in a set, wildcards in a regex."""

    exact: frozenset[str]
    wild: re.Pattern | None
    everything: bool

    @classmethod
    def of(cls, patterns: Iterable[str]) -> "NameSet":
        patterns = list(patterns)
        return cls(frozenset(p for p in patterns if ANY not in p), _pattern_regex(patterns), ANY in patterns)

    def __contains__(self, name: str) -> bool:
        return self.everything or name in self.exact or (self.wild is not None and self.wild.fullmatch(name) is not None)


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
            everywhere = NameSet.of(mapping[ANY]) if ANY in mapping else None
            kinds[kind] = (everywhere, {c: NameSet.of(names) for c, names in mapping.items() if c != ANY})
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
        for layer in self.layers:
            if not layer.allows(kind, connection_id, name):
                return False
        return True

    def may_manage(self, permission: str) -> bool:
        return all(permission in layer.manage for layer in self.layers)


def scope_layers(scope: Any) -> list[dict[str, Any]]:
    """An API key's narrowing scope as stored, as the list of documents that must all allow:
    ``None`` (not narrowed) → ``[]``; one document (keys made before scopes could stack) → that
    one; a list of documents (a key made through a narrowed key: its scope, then the new one)
    → each. Every document is validated (``PolicyError`` otherwise)."""
    if scope is None:
        return []
    if isinstance(scope, Mapping):
        return [normalize(scope)]
    if isinstance(scope, list) and scope:
        return [normalize(doc) for doc in scope]
    raise PolicyError("a key's scope must be a permission document or a non-empty list of them")


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
    "tasks/get", "tasks/result", "tasks/cancel", "tasks/list",
})
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
    """The tool, prompt or resource a request acts on; ``None`` for one that acts on none."""
    if method in PASS_METHODS or method in LIST_METHODS or method.startswith("notifications/"):
        return None
    params = params or {}
    if method in _TARGETS:
        kind, field = _TARGETS[method]
        name = params.get(field)
        if not isinstance(name, str):
            raise Unclassified(f"{method} needs a string params.{field}")
        return Target(kind, name)
    if method == "completion/complete":
        ref = params.get("ref") or {}
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            return Target("prompts", ref["name"])
        if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            return Target("resources", ref["uri"])
        raise Unclassified("completion/complete needs a prompt or resource reference")
    raise Unclassified(f"method {method!r} is not allowed through the gateway")


def filter_listing(policy: Policy, connection_id: str, method: str, result: Any) -> Any:
    """A ``*/list`` result with only the entries ``policy`` allows on ``connection_id``."""
    kind, field, key = LIST_METHODS[method]
    if not isinstance(result, dict) or not isinstance(result.get(field), list):
        return result
    kept = [entry for entry in result[field]
            if isinstance(entry, dict) and isinstance(entry.get(key), str) and policy.allows(kind, connection_id, entry[key])]
    return {**result, field: kept}
