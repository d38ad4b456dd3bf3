"""Resource URIs in the one evaluator (issue #10, item 6): a URI is decided on its canonical form,
and one that upstreams may resolve differently from how it reads (``file:///docs/../etc/passwd``
under ``file:///docs/*``) is refused whatever the policy allows, in requests and in listings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.policy import (
    MAX_NAME_LENGTH, Policy, PolicyError, Target, Unclassified, UnsafeUri, canonical_uri, filter_listing, normalize,
    _PLAIN, _canonical, target_of,
)
from tests.shared.test_policy_matching import cpu_seconds

DOCS_ONLY = Policy([{"resources": {"*": ["file:///docs/*"]}}])
EVERYTHING = Policy([{"resources": {"*": ["*"]}}])

# Each way of walking out of file:///docs/ that some upstream would take, and why it is refused.
ESCAPES = [
    ("file:///docs/../etc/passwd", ". or .. segment"),
    ("file:///docs/./../etc/passwd", ". or .. segment"),
    ("file:///docs/..", ". or .. segment"),
    ("FILE:///docs/..", ". or .. segment"),
    ("file:///docs/%2e%2e/etc/passwd", ". or .. segment"),
    ("file:///docs/%2E%2E/etc/passwd", ". or .. segment"),
    ("file:///docs/.%2E/etc/passwd", ". or .. segment"),
    ("file:///docs/%2e./etc/passwd", ". or .. segment"),
    ("file:///docs/%252e%252e/etc/passwd", ". or .. segment"),  # decoded twice by the upstream
    ("file:///docs/%25252e%25252e/etc/passwd", ". or .. segment"),
    ("file:///docs/%2525252e%2525252e/etc/passwd", "percent-encoded more than 3 times"),
    ("file:///docs/\uff0e\uff0e/etc/passwd", ". or .. segment"),  # fullwidth dots, folded by NFKC
    ("file:///docs/\u2025/etc/passwd", ". or .. segment"),  # "two dot leader"
    ("file:///docs/.../etc", ". or .. segment"),  # Windows drops trailing dots
    ("file:///docs/.. /etc/passwd", ". or .. segment"),  # and trailing spaces
    ("file:///docs/..;/etc/passwd", ". or .. segment"),  # Tomcat's path parameters
    ("file:///docs/x?path=../etc/passwd", ". or .. segment"),  # a reader that takes the path from the query
    ("file:///docs/x?path=..%2Fetc%2Fpasswd", ". or .. segment"),
    ("file:///docs/x#/../../etc/passwd", ". or .. segment"),
    ("file://../etc/passwd", ". or .. segment"),
    ("file:///docs/..%2fetc/passwd", "encoded / or \\"),
    ("file:///docs/..%2Fetc/passwd", "encoded / or \\"),
    ("file:///docs/a%2F..%2F..%2Fetc", "encoded / or \\"),
    ("file:///docs/..%5cetc", "encoded / or \\"),
    ("file:///docs/%252F", "encoded / or \\"),
    ("file:///docs/..\\etc\\passwd", "backslash"),
    ("file:///docs/\uff3c..\uff3cetc", "backslash"),  # fullwidth backslash
    ("file:///docs/x?q=%5C", "backslash"),
    ("file:///docs/x\x00/../../etc", "control character"),
    ("file:///docs/x%00.txt", "control character"),
    ("file:///docs/x%0A", "control character"),
    ("file:///docs/readme\r\n", "control character"),
    ("file:///docs//etc/passwd", "empty segment"),  # os.path.join("/srv/docs", "/etc/passwd") is /etc/passwd
    ("file:///docs/\uff0fetc/passwd", "empty segment"),  # a fullwidth solidus, folded by NFKC
    ("file:///docs/C:/Windows/win.ini", "drive letter"),
    ("file:///docs/%C0%AE%C0%AE/etc/passwd", "do not decode as UTF-8"),  # overlong UTF-8 dots
    ("file:///docs/100%", "% is not followed by two hex digits"),
    ("file:///docs/%zz", "% is not followed by two hex digits"),
    ("docs/readme", "no scheme"),
    ("/docs/readme", "no scheme"),
]


@pytest.mark.parametrize("uri, reason", ESCAPES)
def test_a_uri_that_could_leave_the_allowed_path_is_refused_with_the_reason(uri, reason):
    with pytest.raises(UnsafeUri, match=re.escape(reason)):
        canonical_uri(uri)
    assert not DOCS_ONLY.allows("resources", "conn_1", uri)
    assert not EVERYTHING.allows("resources", "conn_1", uri), "refused whatever the policy allows"
    with pytest.raises(Unclassified, match="is refused"):
        target_of("resources/read", {"uri": uri})


@pytest.mark.parametrize("method, params", [
    ("resources/read", {"uri": "file:///docs/../etc/passwd"}),
    ("resources/subscribe", {"uri": "file:///docs/../etc/passwd"}),
    ("resources/unsubscribe", {"uri": "file:///docs/%2e%2e/etc/passwd"}),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "file:///docs/..%2fetc/{name}"}}),
])
def test_every_request_naming_a_resource_refuses_unsafe_uris(method, params):
    with pytest.raises(Unclassified, match=r"resource URI .* is refused: "):
        target_of(method, params)


def test_the_refusal_reads_well():
    with pytest.raises(Unclassified) as refusal:
        target_of("resources/read", {"uri": "file:///docs/../etc/passwd"})
    assert str(refusal.value) == ("resource URI 'file:///docs/../etc/passwd' is refused: it has a . or .. segment "
                                  "(possibly percent-encoded), which could lead outside the allowed path")


@pytest.mark.parametrize("uri, canonical", [
    ("file:///docs/readme", "file:///docs/readme"),
    ("FILE:///docs/readme", "file:///docs/readme"),  # schemes are case-insensitive
    ("HTTPS://User:Secret@Docs.EXAMPLE.com:8443/Path/To", "https://User:Secret@docs.example.com:8443/Path/To"),
    ("file:///docs/caf%c3%a9", "file:///docs/caf%C3%A9"),  # the same escape, in either case
    ("file:///docs/%64ocs", "file:///docs/%64ocs"),  # not decoded: to a reader that does not decode it is not "docs"
    ("file:///docs/.hidden", "file:///docs/.hidden"),
    ("file:///docs/a..b", "file:///docs/a..b"),
    ("file:///docs/v1.2/notes.txt", "file:///docs/v1.2/notes.txt"),
    ("file:///docs/x?q=a%2Fb", "file:///docs/x?q=a%2Fb"),  # an encoded / in a query is ordinary
    ("file:///C:/docs/x", "file:///C:/docs/x"),  # a drive letter where a path starts
    ("file:///docs/caf\u00e9", "file:///docs/caf\u00e9"),
    ("file:///docs/{name}", "file:///docs/{name}"),  # a URI template
    ("test://static/resource/1", "test://static/resource/1"),
    ("urn:isbn:0451450523", "urn:isbn:0451450523"),
])
def test_canonical_form_equates_only_spellings_every_reader_agrees_on(uri, canonical):
    assert canonical_uri(uri) == canonical
    assert canonical_uri(canonical) == canonical


@pytest.mark.parametrize("uri, allowed", [
    ("file:///docs/readme", True), ("FILE:///docs/readme", True), ("file:///docs/sub/page.md", True),
    ("file:///docs/caf%c3%a9", True), ("file:///docs", False), ("file:///docsx/a", False),
    ("file:///%64ocs/readme", False), ("file:///etc/passwd", False), ("https:///docs/readme", False),
])
def test_the_decision_is_taken_on_the_canonical_uri(uri, allowed):
    assert DOCS_ONLY.allows("resources", "conn_1", uri) is allowed


def test_patterns_are_put_in_canonical_form_too():
    policy = Policy([{"resources": {"*": ["FILE:///Docs/*", "https://Docs.Example.com/*", "file:///caf%c3%a9/*"]}}])
    assert policy.allows("resources", "c", "file:///Docs/a")
    assert not policy.allows("resources", "c", "file:///docs/a")  # paths keep their case
    assert policy.allows("resources", "c", "https://docs.example.com/a")
    assert policy.allows("resources", "c", "file:///caf%C3%A9/a")


@pytest.mark.parametrize("pattern, complaint", [
    ("file:///docs/../*", ". or .. segment"),
    ("file:///docs/%2e%2e/*", ". or .. segment"),
    ("file:///docs/..%2F*", "encoded / or \\"),
    ("file:///docs\\*", "backslash"),
    ("https://*.Example.com/*", "lower case"),
    ("file:///docs/%*", "% is not followed by two hex digits"),
])
def test_resource_patterns_that_could_only_match_refused_uris_are_refused(pattern, complaint):
    with pytest.raises(PolicyError, match=re.escape(complaint)) as refusal:
        normalize({"resources": {"conn_1": [pattern]}})
    assert repr(pattern) in str(refusal.value)


@pytest.mark.parametrize("pattern", ["*", "file:///docs/*", "*.pdf", "*://docs/*", "https://*.example.com/*",
                                     "file:///docs/.*", "file:///docs/{name}"])
def test_ordinary_resource_patterns_are_accepted(pattern):
    normalize({"resources": {"*": [pattern]}})


def test_a_listing_drops_entries_with_unsafe_uris_whatever_the_policy():
    result = {"resources": [{"uri": "file:///docs/readme", "name": "readme"},
                            {"uri": "file:///docs/../etc/passwd", "name": "passwd"},
                            {"uri": "file:///docs/%2e%2e/secret", "name": "secret"},
                            {"uri": "file:///other/x", "name": "other"},
                            {"uri": "FILE:///docs/upper", "name": "upper"}]}
    def listed(policy):
        return [r["name"] for r in filter_listing(policy, "c", "resources/list", result)["resources"]]

    assert listed(DOCS_ONLY) == ["readme", "upper"]
    assert listed(EVERYTHING) == ["readme", "other", "upper"]


def test_templates_are_listed_when_their_text_is_allowed_and_safe():
    result = {"resourceTemplates": [{"uriTemplate": "file:///docs/{name}", "name": "doc"},
                                    {"uriTemplate": "file:///docs/../{name}", "name": "up"},
                                    {"uriTemplate": "file:///{dir}/readme", "name": "any dir"}],
              "nextCursor": "n"}
    filtered = filter_listing(DOCS_ONLY, "c", "resources/templates/list", result)
    assert [t["name"] for t in filtered["resourceTemplates"]] == ["doc"] and filtered["nextCursor"] == "n"
    assert target_of("completion/complete", {"ref": {"type": "ref/resource", "uri": "file:///docs/{name}"}}) == \
        Target("resources", "file:///docs/{name}")


def test_a_resource_uri_longer_than_the_cap_is_refused_with_the_limit():
    uri = "file:///docs/" + "a" * MAX_NAME_LENGTH["resources"]
    with pytest.raises(Unclassified, match="resource URIs are limited to 2048 characters; this one has 2061"):
        target_of("resources/read", {"uri": uri})
    with pytest.raises(Unclassified, match="tool names are limited to 256 characters"):
        target_of("tools/call", {"name": "a" * 257})


def test_a_completion_reference_that_is_not_an_object_is_refused():
    with pytest.raises(Unclassified, match="needs a prompt or resource reference"):
        target_of("completion/complete", {"ref": "file:///docs/readme"})


# Random URIs built from the pieces attacks are made of: whatever the mix, a URI that is allowed
# under file:///docs/* has no way out of /docs/ for a reader that decodes it (any number of times,
# with or without Unicode folding) and resolves dot segments, nor for one that does neither.
pieces = st.sampled_from(["docs", "a", ".", "..", "%2e", "%2E", "%252e", "/", "%2f", "%5c", "\\", ";", "?", "#",
                          "=", "\uff0e", "\uff05", "\uff12\uff45", " ", "%00", "%", "25", "C:", "%C3%A9"])


@settings(max_examples=1500, deadline=None)
@given(tail=st.lists(pieces, max_size=10).map("".join))
def test_no_allowed_uri_resolves_outside_the_allowed_path(tail):
    import posixpath
    import unicodedata
    from urllib.parse import unquote

    uri = "file:///docs/" + tail
    if not DOCS_ONLY.allows("resources", "c", uri):
        return
    readings = {uri}
    for _ in range(4):
        readings |= {unquote(r) for r in readings} | {unicodedata.normalize("NFKC", r) for r in readings}
    for reading in readings:
        path = reading.removeprefix("file://").replace("\\", "/").split("?")[0].split("#")[0].split(";")[0]
        resolved = posixpath.normpath(path)
        assert resolved == "/docs" or resolved.startswith("/docs/"), (uri, reading)


@pytest.mark.parametrize("uri", [
    "file:///" + "." * 2040, "file:///" + " " * 2039 + "x", "file:///" + "/." * 1020, "file:///" + ". " * 1019 + "x",
    "file:///" + "%25" * 680, "file:///" + "a/" * 1019 + "C:", "file:///" + "%C3%A9" * 340,
    "file:///" + "\uff0e" * 2040,
    "file:///x?" + "&=" * 1019, "a" * 2040 + ":", "file:///docs/" + "a" * 2035,
])
def test_checking_a_long_uri_takes_one_pass_whatever_it_holds(uri):
    assert len(uri) <= MAX_NAME_LENGTH["resources"]
    assert cpu_seconds(lambda: EVERYTHING.allows("resources", "c", uri)) < 0.01


@settings(max_examples=500, deadline=None)
@given(uri=st.from_regex(_PLAIN, fullmatch=True))
def test_the_fast_path_takes_only_uris_the_full_check_passes_unchanged(uri):
    """Most URIs are decided by one match (``_PLAIN``); it must never let through what the full
    check refuses or would spell differently."""
    assert _canonical(uri, pattern=False) == uri
