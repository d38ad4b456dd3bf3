"""The envelope (``shared.envelope``): AES-256-GCM with a data key per secret, wrapped by a key
from a keyring, bound to where the secret belongs."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.credentials import delivery_context, vault_context
from shared.envelope import (
    AuthenticationFailed,
    EnvelopeError,
    Keyring,
    KeyFormatError,
    MalformedRecord,
    SealContext,
    UnknownKey,
    generate_key,
    key_id_for,
    open_sealed,
    parse_key,
    parse_record,
    rewrap,
    seal,
)

SECRET = b"sk-live-the-upstream-token-a1b2"
ORIGIN = "https://api.example:443"
HERE = vault_context("org_a", "conn_1", "bearer", origin=ORIGIN)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.single(generate_key())


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def assert_clear_failure(error: EnvelopeError) -> None:
    message = str(error)
    assert message and "conn_1" in message
    assert SECRET.decode() not in message and "a1b2" not in message


def test_a_sealed_secret_opens_again_with_the_same_context_and_keyring(keyring):
    record = seal(SECRET, HERE, keyring)
    assert open_sealed(record, HERE, keyring) == SECRET
    assert open_sealed(record.to_json(), HERE, keyring) == SECRET


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2048), st.text(min_size=1, max_size=40))
def test_any_value_survives_a_round_trip_through_the_stored_text(value, field):
    keyring = Keyring.single(b"k" * 32)
    context = vault_context("org_x", "conn_y", field, origin=ORIGIN)
    stored = seal(value, context, keyring).to_json()
    assert open_sealed(parse_record(stored), context, keyring) == value


def test_the_stored_layout_is_versioned_json_with_a_key_id(keyring):
    doc = json.loads(seal(SECRET, HERE, keyring).to_json())
    assert doc["v"] == 1 and doc["kid"] == keyring.active
    assert set(doc) == {"v", "kid", "wn", "wk", "n", "ct"}
    assert SECRET.decode() not in json.dumps(doc)


def test_every_seal_uses_a_fresh_data_key_and_nonces(keyring):
    one, two = seal(SECRET, HERE, keyring), seal(SECRET, HERE, keyring)
    assert one.nonce != two.nonce and one.wrap_nonce != two.wrap_nonce
    assert one.ciphertext != two.ciphertext and one.wrapped_key != two.wrapped_key


@pytest.mark.parametrize("part", ["ciphertext", "nonce", "wrapped_key", "wrap_nonce"])
def test_flipping_any_byte_of_a_stored_record_fails_with_a_clear_error(keyring, part):
    record = seal(SECRET, HERE, keyring)
    original = getattr(record, part)
    for index in range(len(original)):
        damaged = dataclasses.replace(record, **{part: flipped(original, index)})
        # Through the stored text too, as a damaged database row would be read.
        with pytest.raises(AuthenticationFailed) as caught:
            open_sealed(damaged.to_json(), HERE, keyring)
        assert_clear_failure(caught.value)


def test_a_changed_key_id_is_an_unknown_key_not_a_crash(keyring):
    record = seal(SECRET, HERE, keyring)
    with pytest.raises(UnknownKey) as caught:
        open_sealed(dataclasses.replace(record, kid="k0000000000000000"), HERE, keyring)
    assert_clear_failure(caught.value)


@pytest.mark.parametrize("elsewhere", [
    vault_context("org_a", "conn_2", "bearer", origin=ORIGIN),             # another connection
    vault_context("org_b", "conn_1", "bearer", origin=ORIGIN),             # another org
    vault_context("org_a", "conn_1", "header:X-Api-Key", origin=ORIGIN),   # another field
    delivery_context("org_a", "conn_1", "bearer", origin=ORIGIN),          # the same place, but the delivery copy
    vault_context("org_a", "conn_1", "bearer", origin="https://evil.example:443"),  # another host
    vault_context("org_a", "conn_1", "bearer", origin="https://api.example:8443"),  # another port
    vault_context("org_a", "conn_1", "bearer", origin="http://api.example:443"),    # another scheme
    vault_context("org_a", "conn_1", "bearer", origin="stdio"),                     # a command instead
])
def test_a_record_copied_anywhere_else_does_not_open(keyring, elsewhere):
    record = seal(SECRET, HERE, keyring)
    with pytest.raises(AuthenticationFailed):
        open_sealed(record, elsewhere, keyring)


def test_swapping_ciphertexts_or_wrapped_keys_between_two_connections_fails(keyring):
    mine_ctx, theirs_ctx = HERE, vault_context("org_a", "conn_2", "bearer", origin=ORIGIN)
    mine, theirs = seal(SECRET, mine_ctx, keyring), seal(b"their-token-0000000000", theirs_ctx, keyring)
    swapped_ct = dataclasses.replace(mine, nonce=theirs.nonce, ciphertext=theirs.ciphertext)
    swapped_key = dataclasses.replace(mine, wrap_nonce=theirs.wrap_nonce, wrapped_key=theirs.wrapped_key)
    for record in (swapped_ct, swapped_key, theirs):
        with pytest.raises(AuthenticationFailed):
            open_sealed(record, mine_ctx, keyring)


def test_another_key_cannot_open_a_record_even_under_the_same_key_id(keyring):
    record = seal(SECRET, HERE, keyring)
    with pytest.raises(UnknownKey):
        open_sealed(record, HERE, Keyring.single(generate_key()))
    forged = Keyring(keyring.active, {keyring.active: generate_key()})
    with pytest.raises(AuthenticationFailed):
        open_sealed(record, HERE, forged)


def test_rewrapping_moves_the_data_key_under_the_active_key_and_keeps_the_ciphertext(keyring):
    record = seal(SECRET, HERE, keyring)
    new_key = generate_key()
    moved = rewrap(record, HERE, Keyring.of(new_key, keyring.keys[keyring.active]))
    assert moved.kid == key_id_for(new_key) != record.kid
    assert (moved.nonce, moved.ciphertext) == (record.nonce, record.ciphertext)
    assert open_sealed(moved, HERE, Keyring.single(new_key)) == SECRET
    with pytest.raises(EnvelopeError):
        open_sealed(moved, HERE, keyring)  # the old key opens nothing that was moved


def test_rewrapping_a_damaged_record_is_refused(keyring):
    record = seal(SECRET, HERE, keyring)
    damaged = dataclasses.replace(record, ciphertext=flipped(record.ciphertext, 0))
    with pytest.raises(AuthenticationFailed):
        rewrap(damaged, HERE, Keyring.of(generate_key(), keyring.keys[keyring.active]))


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"v": 2}', '{"v": 1, "kid": "k"}',
                                  '{"v":1,"kid":"k","wn":"AA","wk":"AA","n":"AA","ct":"AA"}'])
def test_records_that_are_not_records_are_malformed(keyring, text):
    with pytest.raises(MalformedRecord):
        open_sealed(text, HERE, keyring)


def test_keys_are_accepted_as_base64_or_hex_and_anything_else_is_refused_without_echo():
    key = generate_key()
    for text in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("="),
                 key.hex(), key.hex().upper(), f"  {key.hex()}\n"):
        assert parse_key(text) == key
    for bad in ("", "short", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(),
                "zz" * 32, "correct horse battery staple correct horse battery"):
        with pytest.raises(KeyFormatError) as caught:
            parse_key(bad, "ENCRYPTION_KEY")
        assert "ENCRYPTION_KEY" in str(caught.value)
        assert not bad or bad not in str(caught.value)


def test_keyrings_never_show_their_keys():
    key = generate_key()
    ring = Keyring.single(key)
    shown = repr(ring) + str(ring)
    assert key.hex() not in shown and base64.b64encode(key).decode() not in shown and repr(key) not in shown


def test_contexts_cannot_be_confused_by_separators():
    assert SealContext("vault", "a,b", "c", "d", "o").encode() != SealContext("vault", "a", "b,c", "d", "o").encode()
    assert SealContext("vault", "a", "b", "c,d", "o").encode() != SealContext("vault", "a", "b", "c", "d,o").encode()
