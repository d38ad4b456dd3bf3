"""The snapshot MAC (``shared.snapshot_mac``): only what the control plane signed, for that org's
field, under a data-plane key this process holds, is ever read; everything else is refused
before a byte of it is parsed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.envelope import Keyring, generate_key
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot
from shared.snapshot_mac import (
    FORMAT,
    NO_KEY,
    UNAUTHENTICATED,
    UNREADABLE,
    WRONG_ORG,
    SnapshotRejected,
    mac_key,
    open_snapshot,
    sign,
    sign_snapshot,
    verify,
)

KEY = generate_key()
KEYRING = Keyring.single(KEY)


def snapshot(org: str = "org_a", version: int = 3) -> Snapshot:
    return Snapshot(
        org_id=org, version=version,
        connections={"conn_1": ConnectionRoute(name="run", url="", transport="stdio", command="/bin/true")},
        api_keys={"ab" * 32: KeyGrant(key_id="key_1", user_id="usr_1", policy="role:member")},
        policies={"role:member": [{"tools": {"*": ["*"]}}]},
    )


def refused(reason: str, org_id: str, stored, keyring=KEYRING) -> str:
    with pytest.raises(SnapshotRejected) as caught:
        open_snapshot(org_id, stored, keyring)
    assert caught.value.reason == reason
    return str(caught.value)


def test_a_signed_snapshot_opens_as_itself_for_its_own_org():
    original = snapshot()
    stored = sign_snapshot(original, KEYRING)
    assert stored.startswith(f"mesh-snapshot/1.{KEYRING.active}.")
    assert open_snapshot("org_a", stored, KEYRING) == original
    assert open_snapshot("org_a", stored.encode(), KEYRING) == original  # as redis-py returns it


def test_the_tag_is_hmac_sha256_under_a_key_derived_from_the_dataplane_key_bound_to_the_org():
    payload = snapshot().to_json().encode()
    stored = sign("org_a", payload, KEYRING)
    _, kid, tag, rest = stored.split(b".", 3)
    assert rest == payload and kid == KEYRING.active.encode()
    message = FORMAT + b"\0" + json.dumps([kid.decode(), "org_a"], separators=(",", ":")).encode() + b"\0" + payload
    expected = hmac.new(mac_key(KEY), message, hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(tag + b"=") == expected
    assert mac_key(KEY) != KEY and len(mac_key(KEY)) == 32  # the data-plane key itself never keys the HMAC


def test_a_snapshot_without_a_mac_is_refused():
    message = refused(UNAUTHENTICATED, "org_a", snapshot().to_json())  # the format before MACs existed
    assert "no MAC" in message


def test_a_tampered_payload_is_refused():
    stored = sign_snapshot(snapshot(), KEYRING)
    forged = stored.replace('"command":"/bin/true"', '"command":"/bin/sh"')
    assert forged != stored
    refused(UNAUTHENTICATED, "org_a", forged)


def test_a_snapshot_signed_under_another_key_is_refused():
    other = Keyring.single(generate_key())
    message = refused(UNAUTHENTICATED, "org_a", sign_snapshot(snapshot(), other))
    assert other.active in message and "does not hold" in message


def test_a_foreign_mac_under_our_key_id_is_refused():
    # The attacker knows the key id (it is in every sealed credential) but not the key.
    other = Keyring.single(generate_key())
    _, _, tag, payload = sign_snapshot(snapshot(), other).split(".", 3)
    refused(UNAUTHENTICATED, "org_a", ".".join((FORMAT.decode(), KEYRING.active, tag, payload)))


def test_a_snapshot_copied_to_another_orgs_field_is_refused():
    stored = sign_snapshot(snapshot("org_b"), KEYRING)
    assert open_snapshot("org_b", stored, KEYRING).org_id == "org_b"
    message = refused(UNAUTHENTICATED, "org_a", stored)
    assert "another org's field" in message


def test_an_authentic_payload_naming_another_org_is_refused():
    # Only a control plane could sign this (it never does): the field and the payload must agree.
    stored = sign("org_a", snapshot("org_b").to_json().encode(), KEYRING)
    refused(WRONG_ORG, "org_a", stored)


def test_an_authentic_but_unreadable_payload_is_refused():
    refused(UNREADABLE, "org_a", sign("org_a", b'{"schema": 99}', KEYRING))
    refused(UNREADABLE, "org_a", sign("org_a", b"not json", KEYRING))


@pytest.mark.parametrize("cut", [1, 10, 500])
def test_a_truncated_snapshot_is_refused(cut):
    stored = sign_snapshot(snapshot(), KEYRING)
    refused(UNAUTHENTICATED, "org_a", stored[:-cut])


@pytest.mark.parametrize("stored", [
    b"", b"mesh-snapshot/1", b"mesh-snapshot/1...", b"mesh-snapshot/2.k0123456789abcdef.x.{}",
    b"mesh-snapshot/1.nokid.AAAA.{}", b"mesh-snapshot/1.k0123456789abcdef.short.{}",
    "mesh-snapshot/1.k0123456789abcdef.\u00e9\u00e9.{}".encode(),
])
def test_malformed_headers_are_refused(stored):
    refused(UNAUTHENTICATED, "org_a", stored)


def test_without_a_dataplane_key_every_snapshot_is_refused():
    message = refused(NO_KEY, "org_a", sign_snapshot(snapshot(), KEYRING), keyring=None)
    assert "no data-plane key" in message


def test_refusals_never_carry_key_material_or_content():
    stored = sign_snapshot(snapshot(), KEYRING)
    for org_id, value in (("org_a", stored.replace("/bin/true", "/bin/sh")), ("org_b", stored)):
        with pytest.raises(SnapshotRejected) as caught:
            open_snapshot(org_id, value, KEYRING)
        text = str(caught.value)
        _, _, tag, _ = stored.split(".", 3)
        assert tag not in text and "/bin" not in text and "key_1" not in text
        assert base64.b64encode(KEY).decode() not in text and KEY.hex() not in text


def test_a_keyring_with_an_older_dataplane_key_still_opens_what_that_key_signed():
    old = Keyring.single(generate_key())
    stored = sign_snapshot(snapshot(), old)
    both = Keyring.of(KEY, old.keys[old.active])
    assert open_snapshot("org_a", stored, both) == snapshot()


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_single_byte_changed_anywhere_is_refused(position, flip):
    stored = bytearray(sign_snapshot(snapshot(), KEYRING).encode())
    position %= len(stored)
    stored[position] ^= flip
    with pytest.raises(SnapshotRejected):
        verify("org_a", bytes(stored), KEYRING)
