"""Pangea tamper-evidence checks, one at a time, against trees and signatures built independently."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from siem_forwarder_plugins.sources.pangea.verify import (
    FAIL,
    INSTALL_HINT,
    NONE,
    PASS,
    SignatureVerifier,
    envelope_hash,
    verify_consistency_proof,
    verify_hash,
    verify_membership,
)
from tests.fakes.pangea import Tree, canonical


def sha(envelope: dict) -> str:
    return hashlib.sha256(canonical(envelope)).hexdigest()


ENVELOPE = {"event": {"message": "naïve café ✓", "actor": "alice", "nested": {"b": 1, "a": [1, 2]}},
            "received_at": "2026-11-01T10:00:00.123456Z"}


# --------------------------------------------------------------------------- hash


def test_hash_passes_on_the_canonical_json_of_the_envelope() -> None:
    assert envelope_hash(ENVELOPE) == sha(ENVELOPE)
    assert verify_hash(ENVELOPE, sha(ENVELOPE)) == PASS
    assert verify_hash(ENVELOPE, sha(ENVELOPE).upper()) == PASS


def test_hash_fails_when_any_byte_of_the_envelope_changes() -> None:
    claimed = sha(ENVELOPE)
    altered = json.loads(json.dumps(ENVELOPE))
    altered["event"]["message"] = "naive cafe"
    assert verify_hash(altered, claimed) == FAIL
    with_key = dict(ENVELOPE, signature="c2ln")
    assert verify_hash(with_key, claimed) == FAIL


def test_hash_covers_every_envelope_key_but_leaves_out_nulls() -> None:
    extra = dict(ENVELOPE, public_key="a2V5", signature="c2ln", custom="x")
    assert verify_hash(extra, sha(extra)) == PASS
    with_null = dict(ENVELOPE, signature=None)
    assert verify_hash(with_null, sha(ENVELOPE)) == PASS


@pytest.mark.parametrize("received_at", ["2026-11-01T10:00:00.123Z", "2026-11-01T10:00:00.123456+00:00",
                                         "2026-11-01T10:00:00Z", "2026-11-01 10:00:00.123456Z"])
def test_only_microsecond_z_received_at_can_verify(received_at: str) -> None:
    envelope = dict(ENVELOPE, received_at=received_at)
    assert verify_hash(envelope, sha(envelope)) == FAIL


def test_hash_of_garbage_fails_instead_of_raising() -> None:
    assert verify_hash("not an object", "00" * 32) == FAIL
    assert verify_hash(ENVELOPE, None) == FAIL
    assert verify_hash(dict(ENVELOPE, event={"x": float("nan")}), "00" * 32) == FAIL


# --------------------------------------------------------------------------- membership


def tree_of(n: int) -> Tree:
    tree = Tree()
    tree.leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
    return tree


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 13, 16, 31])
def test_every_leaf_of_every_tree_shape_verifies(size: int) -> None:
    tree = tree_of(size)
    root = tree.root(size).hex()
    for i in range(size):
        proof = ",".join(tree.path(i, i + 1, size))
        assert verify_membership(tree.leaves[i].hex(), proof, root) == PASS, (size, i)


def test_membership_fails_on_a_flipped_sibling_a_swapped_side_or_another_root() -> None:
    tree = tree_of(11)
    root = tree.root(11).hex()
    leaf = tree.leaves[6].hex()
    items = tree.path(6, 7, 11)
    flipped = items[:]
    side, sib = flipped[1].split(":")
    flipped[1] = f"{side}:{sib[:-1]}{'1' if sib[-1] == '0' else '0'}"
    swapped = items[:]
    swapped[0] = ("r:" if swapped[0][0] == "l" else "l:") + swapped[0][2:]
    assert verify_membership(leaf, ",".join(flipped), root) == FAIL
    assert verify_membership(leaf, ",".join(swapped), root) == FAIL
    assert verify_membership(leaf, ",".join(items), tree.root(10).hex()) == FAIL
    assert verify_membership(tree.leaves[5].hex(), ",".join(items), root) == FAIL


def test_membership_is_none_without_a_proof_or_root_and_fail_on_malformed_ones() -> None:
    tree = tree_of(4)
    proof = ",".join(tree.path(0, 1, 4))
    leaf, root = tree.leaves[0].hex(), tree.root(4).hex()
    assert verify_membership(leaf, None, root) == NONE
    assert verify_membership(leaf, proof, None) == NONE
    for bad in ("x:" + "00" * 32, "l:zz", "l:" + "00" * 16, "l", proof + ",", 42):
        assert verify_membership(leaf, bad, root) == FAIL


def test_nodes_have_no_prefixes() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    root = hashlib.sha256(a + b).hexdigest()
    assert verify_membership(a.hex(), "r:" + b.hex(), root) == PASS
    assert verify_membership(b.hex(), "l:" + a.hex(), root) == PASS
    rfc6962_root = hashlib.sha256(b"\x01" + a + b).hexdigest()
    assert verify_membership(a.hex(), "r:" + b.hex(), rfc6962_root) == FAIL


# --------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("old", [1, 2, 3, 4, 5, 6, 7, 8, 12, 17])
def test_consistency_proofs_of_consecutive_roots_verify(old: int) -> None:
    tree = tree_of(old + 1)
    proof = tree.consistency(old, old + 1)
    assert verify_consistency_proof(tree.root(old + 1).hex(), tree.root(old).hex(), proof)


def test_consistency_fails_against_a_rewritten_history() -> None:
    tree = tree_of(9)
    proof = tree.consistency(8, 9)
    other = tree_of(9)
    other.leaves[3] = hashlib.sha256(b"rewritten").digest()
    assert not verify_consistency_proof(tree.root(9).hex(), other.root(8).hex(), proof)
    assert not verify_consistency_proof(other.root(9).hex(), tree.root(8).hex(), proof)
    assert not verify_consistency_proof(tree.root(9).hex(), tree.root(8).hex(), [])
    assert not verify_consistency_proof(tree.root(9).hex(), tree.root(8).hex(), ["y:" + proof[0][2:]])


# --------------------------------------------------------------------------- signatures


KEY = Ed25519PrivateKey.generate()
EVENT = {"message": "signed ✓", "actor": "bob", "timestamp": "2026-11-01T10:00:00.000000Z"}


def key_forms() -> dict[str, str]:
    public = KEY.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"json-pem": json.dumps({"algorithm": "ED25519", "key": pem}),
            "json-ssh": json.dumps({"algorithm": "ED25519", "key": ssh}),
            "base64-der": base64.b64encode(der).decode(),
            "base64-raw": base64.b64encode(raw).decode()}


def signed(event: dict, public_key: str) -> dict:
    return {"event": event, "received_at": "2026-11-01T10:00:00.000001Z",
            "signature": base64.b64encode(KEY.sign(canonical(event))).decode(), "public_key": public_key}


@pytest.fixture
def verifier() -> SignatureVerifier:
    return SignatureVerifier(logging.getLogger("test.pangea"), "pangea-test")


@pytest.mark.parametrize("form", sorted(key_forms()))
def test_signature_passes_with_each_public_key_form(verifier: SignatureVerifier, form: str) -> None:
    assert verifier.verify(signed(EVENT, key_forms()[form])) == PASS


@pytest.mark.parametrize("form", sorted(key_forms()))
def test_signature_fails_when_the_event_changed(verifier: SignatureVerifier, form: str) -> None:
    envelope = signed(EVENT, key_forms()[form])
    envelope["event"] = dict(EVENT, actor="mallory")
    assert verifier.verify(envelope) == FAIL


def test_signature_of_another_key_or_garbage_fails(verifier: SignatureVerifier) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw)
    assert verifier.verify(signed(EVENT, base64.b64encode(other).decode())) == FAIL
    good = signed(EVENT, key_forms()["json-pem"])
    assert verifier.verify(dict(good, signature="not base64!")) == FAIL
    assert verifier.verify(dict(good, public_key='{"algorithm":"RSA","key":"x"}')) == FAIL
    assert verifier.verify(dict(good, public_key="AAAA")) == FAIL


def test_signature_is_none_unless_both_signature_and_key_are_present(verifier: SignatureVerifier) -> None:
    good = signed(EVENT, key_forms()["json-pem"])
    assert verifier.verify({k: v for k, v in good.items() if k != "signature"}) == NONE
    assert verifier.verify({k: v for k, v in good.items() if k != "public_key"}) == NONE
    assert verifier.verify({"event": EVENT, "received_at": good["received_at"]}) == NONE


def test_without_cryptography_signed_events_get_none_and_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, verifier: SignatureVerifier) -> None:
    for module in ("cryptography.exceptions", "cryptography.hazmat.primitives.serialization",
                   "cryptography.hazmat.primitives.asymmetric.ed25519"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import raise ImportError
    caplog.set_level(logging.WARNING, logger="test.pangea")
    good = signed(EVENT, key_forms()["json-pem"])
    assert verifier.verify(good) == NONE
    assert verifier.verify(good) == NONE
    assert verifier.verify({"event": EVENT, "received_at": good["received_at"]}) == NONE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert INSTALL_HINT in warnings[0].getMessage() and "NOT verified" in warnings[0].getMessage()
