"""Pangea Secure Audit Log tamper evidence, checked the way the Pangea SDK checks it.

Three event-level checks, each giving ``pass``, ``fail`` or ``none`` (nothing to check):

* **hash**: the event ``hash`` is the SHA-256 of the canonical JSON of its ``envelope``. The SDK
  re-serialises ``received_at`` with microseconds and ``Z``, so only a server string of exactly
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` can verify; any other form fails, as it does in the SDK.
* **membership**: the ``membership_proof`` (``l:<hex>``/``r:<hex>`` siblings, leaf to root, no
  leaf or node prefixes) must lead from the event hash to ``root.root_hash`` when the event is
  ``published``, else to ``unpublished_root.root_hash``.
* **signature**: when the envelope carries ``signature`` and ``public_key``, the Ed25519
  signature over the canonical JSON of ``event``.

A fourth, optional check (**consistency**, see :func:`verify_consistency_proof`) compares
published roots; :mod:`siem_forwarder_plugins.sources.pangea.ledger` fetches them.

Ed25519 needs ``cryptography``, an optional extra (``pip install 'siem-forwarder[pangea]'``): it
is imported on the first signed event, and when it is missing the signature verdict is ``none``
and one WARNING says how to install it. Nothing here makes a syscall: hashing runs on the hot path.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

PASS = "pass"
FAIL = "fail"
NONE = "none"
CHECKS = ("hash", "membership", "signature")

INSTALL_HINT = "pip install 'siem-forwarder[pangea]'"
RECEIVED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_MAX_CACHED_KEYS = 256


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON the SDK hashes and signs: sorted keys, no spaces, non-ASCII kept, UTF-8."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      sort_keys=True).encode("utf-8")


def envelope_hash(envelope: dict[str, Any]) -> str | None:
    """The SHA-256 hex the server should have computed, or None when ``received_at`` cannot verify.

    Keys whose value is null are left out, as the SDK's ``model_dump(exclude_none=True)`` does.
    """
    received_at = envelope.get("received_at")
    if not isinstance(received_at, str) or RECEIVED_AT_RE.match(received_at) is None:
        return None
    if any(v is None for v in envelope.values()):
        envelope = {k: v for k, v in envelope.items() if v is not None}
    return hashlib.sha256(canonical_bytes(envelope)).hexdigest()


def verify_hash(envelope: Any, claimed: Any) -> str:
    """``pass`` when ``claimed`` is the envelope's hash, else ``fail``."""
    if not isinstance(envelope, dict) or not isinstance(claimed, str):
        return FAIL
    try:
        actual = envelope_hash(envelope)
    except (TypeError, ValueError):  # NaN or a value JSON cannot carry
        return FAIL
    return verify_hash_value(actual, claimed)


def verify_hash_value(actual: str | None, claimed: Any) -> str:
    """``pass`` when ``claimed`` equals an already computed :func:`envelope_hash`, else ``fail``."""
    return PASS if actual is not None and isinstance(claimed, str) and actual == claimed.lower() else FAIL


def _node(text: str) -> bytes:
    raw = bytes.fromhex(text)
    if len(raw) != 32:
        raise ValueError(f"a node hash must be 32 bytes, got {len(raw)}")
    return raw


def fold_proof(leaf_hex: str, proof: str) -> bytes:
    """Walk a ``l:<hex>,r:<hex>,...`` proof from a leaf hash; return the root it leads to.

    Raises ValueError on a malformed proof.
    """
    node = _node(leaf_hex)
    if not proof:
        return node
    for part in proof.split(","):
        side, sep, sibling = part.partition(":")
        if not sep:
            raise ValueError(f"proof item {part[:20]!r} has no side")
        sib = _node(sibling)
        if side == "l":
            node = hashlib.sha256(sib + node).digest()
        elif side == "r":
            node = hashlib.sha256(node + sib).digest()
        else:
            raise ValueError(f"proof item side {side[:5]!r} is neither 'l' nor 'r'")
    return node


def verify_membership(leaf_hex: Any, proof: Any, root_hex: Any) -> str:
    """``none`` without a proof or a root to check it against; else ``pass``/``fail``."""
    if proof is None or root_hex is None:
        return NONE
    if not isinstance(proof, str) or not isinstance(leaf_hex, str) or not isinstance(root_hex, str):
        return FAIL
    try:
        return PASS if fold_proof(leaf_hex, proof) == _node(root_hex) else FAIL
    except ValueError:
        return FAIL


def verify_consistency_proof(new_root_hex: str, prev_root_hex: str, proof: list[str]) -> bool:
    """Check that the tree of ``prev_root_hex`` is a prefix of the tree of ``new_root_hex``.

    Each proof item is ``x:<node>,<membership proof of that node in the new root>``. Folding the
    nodes (``root = sha256(node || root)``, starting from the first) must give the previous
    root, and each node must be a member of the new root.
    """
    if not proof:
        return False
    try:
        items: list[tuple[str, str]] = []
        for item in proof:
            head, _, rest = item.partition(",")
            side, sep, node = head.partition(":")
            if side != "x" or not sep:
                return False
            items.append((node, rest))
        folded = _node(items[0][0])
        for node, _ in items[1:]:
            folded = hashlib.sha256(_node(node) + folded).digest()
        if folded != _node(prev_root_hex):
            return False
        new_root = _node(new_root_hex)
        return all(fold_proof(node, rest) == new_root for node, rest in items)
    except ValueError:
        return False


# --------------------------------------------------------------------------- signatures


class SignatureVerifier:
    """Ed25519 over the canonical JSON of ``event``, with ``cryptography`` loaded on first use.

    Parsed public keys are cached (tenants sign with a handful of keys), so a signed event costs
    one verification, not a PEM parse.
    """

    def __init__(self, logger: logging.Logger, component: str):
        self.log = logger
        self.component = component
        self._crypto: Any = None
        self._crypto_missing = False
        self._keys: dict[str, Any] = {}

    def _load(self) -> Any:
        if self._crypto is None and not self._crypto_missing:
            try:
                from cryptography.exceptions import InvalidSignature
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            except ImportError:
                self._crypto_missing = True
                self.log.warning(
                    "%s: Pangea events carry Ed25519 signatures but the 'cryptography' package is not "
                    "installed, so signatures are NOT verified (integrity.signature = none); install it "
                    "with: %s", self.component, INSTALL_HINT)
                return None
            self._crypto = (InvalidSignature, serialization, Ed25519PublicKey)
        return self._crypto

    @property
    def available(self) -> bool:
        return self._load() is not None

    def verify(self, envelope: dict[str, Any]) -> str:
        """``none`` unless the envelope has both ``signature`` and ``public_key``."""
        signature = envelope.get("signature")
        public_key = envelope.get("public_key")
        if not signature or not public_key:
            return NONE
        crypto = self._load()
        if crypto is None:
            return NONE
        invalid_signature = crypto[0]
        try:
            key = self._key(public_key)
            sig = base64.b64decode(signature, validate=True)
            key.verify(sig, canonical_bytes(envelope["event"]))
        except (invalid_signature, ValueError, TypeError, KeyError, binascii.Error):
            return FAIL
        return PASS

    def _key(self, public_key: Any) -> Any:
        if not isinstance(public_key, str):
            raise TypeError("public_key is not a string")
        key = self._keys.get(public_key)
        if key is None:
            key = parse_public_key(public_key, self._crypto)
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[public_key] = key
        return key


def parse_public_key(text: str, crypto: Any) -> Any:
    """An Ed25519 public key from either form Pangea stores.

    ``{"algorithm":"ED25519","key":"<PEM SPKI or ssh-ed25519 ...>"}`` as a JSON string, or bare
    Base64 whose last 32 bytes are the raw key. Raises ValueError on anything else.
    """
    _, serialization, ed25519_cls = crypto
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            raise ValueError("public_key is neither JSON nor Base64") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
            raise ValueError("public_key JSON has no 'key'")
        algorithm = str(doc.get("algorithm", "ED25519")).upper()
        if algorithm != "ED25519":
            raise ValueError(f"public_key algorithm {algorithm[:20]!r} is not ED25519")
        material = doc["key"].strip().encode("ascii", "replace")
        if material.startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(material)
        else:
            key = serialization.load_pem_public_key(material)
    else:
        raw = base64.b64decode(stripped, validate=True)
        if len(raw) < 32:
            raise ValueError("public_key is shorter than an Ed25519 key")
        key = ed25519_cls.from_public_bytes(raw[-32:])
    if not isinstance(key, ed25519_cls):
        raise ValueError("public_key is not an Ed25519 key")
    return key


# --------------------------------------------------------------------------- one event


@dataclass(frozen=True, slots=True)
class Verdicts:
    """The verdict of each check on one event."""

    hash: str
    membership: str
    signature: str
    consistency: str = NONE

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the checks that failed (empty when the event is intact)."""
        return tuple(name for name in ("hash", "membership", "signature", "consistency")
                     if getattr(self, name) == FAIL)

    def as_integrity(self, with_consistency: bool) -> dict[str, str]:
        out = {"hash": self.hash, "membership": self.membership, "signature": self.signature}
        if with_consistency:
            out["consistency"] = self.consistency
        return out


def root_hash(root: Any) -> str | None:
    """``root_hash`` of a ``Root`` object from a response, or None when absent."""
    if isinstance(root, dict):
        value = root.get("root_hash")
        return value if isinstance(value, str) else None
    return None


def verify_event(item: dict[str, Any], published_root: str | None, unpublished_root: str | None,
                 signatures: SignatureVerifier) -> Verdicts:
    """Run the three event-level checks on one ``SearchEvent``."""
    envelope = item.get("envelope")
    claimed = item.get("hash")
    hash_verdict = verify_hash(envelope, claimed)
    root = published_root if item.get("published") else unpublished_root
    membership = verify_membership(claimed, item.get("membership_proof"), root)
    signature = signatures.verify(envelope) if isinstance(envelope, dict) else FAIL
    return Verdicts(hash_verdict, membership, signature)
