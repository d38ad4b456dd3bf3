"""The one evaluator, checked against a plain reference implementation on random roles."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.policy import (
    BUILTIN_ROLES, KINDS, Policy, PolicyError, Target, Unclassified, filter_listing, normalize, target_of,
)

CONNECTIONS = ["conn_a", "conn_b", "conn_c"]
# Letters, "_" and "*" only: fnmatch gives "?" and "[" meanings our patterns do not have. Some
# names carry a scheme, "x:", as resource URIs must (a resource name without one is refused).
name_text = st.builds(lambda scheme, text: scheme + text, st.sampled_from(["", "x:"]),
                      st.text(alphabet="ABab_", min_size=1, max_size=6))
pattern = st.one_of(name_text, st.builds(lambda a, b: a + "*" + b, st.text("ABab_", max_size=3), st.text("ABab_", max_size=3)),
                    st.just("*"), st.builds(lambda a: "*" + a + "*", name_text), st.just("x:*"))
grants = st.dictionaries(st.sampled_from(CONNECTIONS + ["*"]), st.lists(pattern, max_size=4), max_size=4)
documents = st.fixed_dictionaries({}, optional={kind: grants for kind in KINDS})


def reference_allows(docs, kind, connection, name) -> bool:
    """The obvious reading of the model: every document must have some entry, for this
    connection or for *, with some pattern matching the whole name. A resource URI needs a scheme."""
    if kind == "resources" and not name.startswith("x:"):
        return False
    for doc in docs:
        mapping = doc.get(kind, {})
        if not any(fnmatchcase(name, p) for key in (connection, "*") for p in mapping.get(key, [])):
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(docs=st.lists(documents, min_size=1, max_size=3), kind=st.sampled_from(KINDS),
       connection=st.sampled_from(CONNECTIONS), name=name_text)
def test_the_evaluator_agrees_with_the_reference(docs, kind, connection, name):
    assert Policy(docs).allows(kind, connection, name) == reference_allows(docs, kind, connection, name)


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(documents, min_size=1, max_size=2), connection=st.sampled_from(CONNECTIONS),
       names=st.lists(name_text, max_size=8))
def test_a_filtered_listing_holds_exactly_the_allowed_tools(docs, connection, names):
    policy = Policy(docs)
    result = {"tools": [{"name": n, "inputSchema": {}} for n in names], "nextCursor": "c2"}
    filtered = filter_listing(policy, connection, "tools/list", result)
    assert [t["name"] for t in filtered["tools"]] == [n for n in names if reference_allows(docs, "tools", connection, n)]
    assert filtered["nextCursor"] == "c2"


def test_the_issues_example_role():
    policy = Policy([{"conn_abc": ["SEND_EMAIL", "LIST_*"], "*": ["search"]}])
    assert policy.allows("tools", "conn_abc", "SEND_EMAIL")
    assert policy.allows("tools", "conn_abc", "LIST_THREADS")
    assert policy.allows("tools", "conn_xyz", "search")
    assert not policy.allows("tools", "conn_xyz", "LIST_THREADS")
    assert not policy.allows("tools", "conn_abc", "DELETE_ALL")
    assert not policy.allows("prompts", "conn_abc", "SEND_EMAIL")  # a kind not mentioned allows nothing


def test_a_narrowing_layer_can_only_take_away():
    role = {"tools": {"*": ["echo", "add"]}, "manage": ["connections.read"]}
    scope = {"tools": {"*": ["add", "delete"]}, "manage": ["connections.read", "org.delete"]}
    policy = Policy([role, scope])
    assert policy.allows("tools", "c", "add") and not policy.allows("tools", "c", "echo")
    assert not policy.allows("tools", "c", "delete")
    assert policy.may_manage("connections.read") and not policy.may_manage("org.delete")


def test_builtin_roles():
    owner, admin, member = (Policy([BUILTIN_ROLES[r]]) for r in ("owner", "admin", "member"))
    assert owner.may_manage("org.delete") and not admin.may_manage("org.delete")
    assert admin.may_manage("members.manage") and not member.may_manage("members.manage")
    assert all(p.allows("tools", "conn_x", "anything") for p in (owner, admin, member))


@pytest.mark.parametrize("doc, complaint", [
    ([], "JSON object"), ({"tools": ["echo"]}, "map connection"), ({"tools": {"*": "echo"}}, "list"),
    ({"tools": {"*": [""]}}, "non-empty"), ({"tool": {}, "manage": []}, "unknown permission kinds"),
    ({"manage": ["root"]}, "unknown management"), ({"tools": {"*": ["x" * 300]}}, "256"),
])
def test_invalid_documents_are_refused_with_a_reason(doc, complaint):
    with pytest.raises(PolicyError, match=complaint):
        normalize(doc)


@pytest.mark.parametrize("method, params, expected", [
    ("tools/call", {"name": "echo"}, Target("tools", "echo")),
    ("prompts/get", {"name": "greet"}, Target("prompts", "greet")),
    ("resources/read", {"uri": "file:///a"}, Target("resources", "file:///a")),
    ("resources/subscribe", {"uri": "file:///a"}, Target("resources", "file:///a")),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}}, Target("prompts", "greet")),
    ("tools/list", None, None), ("ping", None, None), ("initialize", {}, None), ("server/discover", {}, None),
    ("notifications/initialized", None, None), ("notifications/anything_new", None, None),
])
def test_what_each_method_acts_on(method, params, expected):
    assert target_of(method, params) == expected


@pytest.mark.parametrize("method, params", [
    ("tools/call", {}), ("tools/call", {"name": 5}), ("completion/complete", {"ref": {}}), ("admin/shell", {}),
])
def test_undecidable_requests_are_refused(method, params):
    with pytest.raises(Unclassified):
        target_of(method, params)


@pytest.mark.parametrize("method, params", [
    ("tasks/get", {"taskId": "t-1"}), ("tasks/result", {"taskId": "t-1"}), ("tasks/cancel", {"taskId": "t-1"}),
    ("tasks/list", {}), ("tools/call", {"name": "echo", "arguments": {}, "task": {"ttl": 60000}}),
])
def test_tasks_are_refused_until_their_ids_are_bound_to_a_key(method, params):
    with pytest.raises(Unclassified, match="tasks are not available through the gateway"):
        target_of(method, params)
