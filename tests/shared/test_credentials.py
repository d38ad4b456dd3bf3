"""What listings show instead of secrets (``mask_secret``, ``mask_url``) and the origin a
connection's secrets are bound to (``upstream_origin``, ``url_origin``)."""

from __future__ import annotations

import pytest

from shared.credentials import mask_secret, mask_url, route_origin, upstream_origin, url_origin


@pytest.mark.parametrize("secret", ["", "x", "sk-12345", "fifteen-chars-x", "a:b"])
def test_a_secret_under_16_characters_shows_nothing_of_itself(secret):
    assert mask_secret(secret) == "…"


@pytest.mark.parametrize("secret", ["sixteen-chars-a1", "sk-live-0123456789abcdef-a1b2", "svc:" + "p" * 40 + "wxyz"])
def test_a_longer_secret_shows_at_most_its_last_4_characters(secret):
    mask = mask_secret(secret)
    assert mask == "…" + secret[-4:]
    assert secret[:-4] not in mask and len(mask) == 5


@pytest.mark.parametrize(("url", "shown"), [
    ("https://api.example/mcp?api_key=sk-live-123&region=eu",
     "https://api.example/mcp?api_key=…&region=…"),
    ("https://api.example/mcp?sk-live-bare-token", "https://api.example/mcp?…"),
    ("https://api.example/mcp?a=1;token=sk-live-123&flag=", "https://api.example/mcp?a=…&flag="),
    ("https://user:pass@api.example:8443/mcp#frag-secret", "https://…@api.example:8443/mcp#…"),
    ("http://127.0.0.1:9/mcp", "http://127.0.0.1:9/mcp"),
])
def test_a_url_is_shown_with_every_query_value_masked(url, shown):
    assert mask_url(url) == shown


def test_a_url_that_does_not_parse_shows_nothing():
    assert mask_url("http://[::1/mcp?token=sk-live-123") == "…"


@pytest.mark.parametrize(("url", "origin"), [
    ("https://API.Example.com/mcp?x=1", "https://api.example.com:443"),
    ("https://api.example.com:443/other/path", "https://api.example.com:443"),
    ("http://api.example.com/mcp", "http://api.example.com:80"),
    ("http://[::1]:8080/mcp", "http://[::1]:8080"),
])
def test_an_origin_is_lowercase_with_its_port_always_written(url, origin):
    assert url_origin(url) == origin


def test_the_data_plane_and_the_control_plane_compute_the_same_origin():
    # The data plane has the parts (scheme, host, port) where the control plane has the URL.
    assert upstream_origin("https", "api.example.com", 443) == url_origin("https://api.example.com/mcp")
    assert route_origin("stdio", "") == "stdio" != route_origin("http", "http://stdio/")


@pytest.mark.parametrize("url", ["not a url", "http:///no-host", "http://h:99999/"])
def test_a_url_without_an_origin_is_refused(url):
    with pytest.raises(ValueError):
        url_origin(url)
