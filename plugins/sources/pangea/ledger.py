"""Published Pangea roots, for the optional consistency check (``verify_consistency: true``).

Pangea publishes each root of its cold tree to a public ledger (Arweave): a GraphQL query by the
``tree_name`` and ``tree_size`` tags finds the transaction, and ``GET <ledger>/<tx>/`` returns the
root. A size the ledger does not have is asked of Pangea itself (``POST v1/root``), as the SDK
does with ``allow_server_roots``.

Log-shipping hosts often cannot reach the ledger. When it is unreachable the check is skipped
(``consistency: none``) for the rest of the poll, and the operator is told once, not per event.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from forwarder_core.plugin_api import ForwarderError, HttpClient, HttpError, redact
from siem_forwarder_plugins.sources.pangea.verify import FAIL, NONE, PASS, verify_consistency_proof

_MAX_CACHED_ROOTS = 4096

_QUERY = (
    "query { transactions(tags: [{name: \"tree_size\", values: %s}, {name: \"tree_name\", values: [%s]}]) "
    "{ edges { node { id tags { name value } } } } }"
)


class LedgerUnreachable(ForwarderError):
    """The public ledger could not be read."""


class Ledger:
    """Fetches and caches published roots by ``(tree_name, size)``."""

    def __init__(self, client: HttpClient, server_root: Callable[[int], dict[str, Any] | None],
                 logger: logging.Logger, component: str):
        self.client = client
        self.server_root = server_root
        self.log = logger
        self.component = component
        self._roots: dict[tuple[str, int], dict[str, Any]] = {}
        self._down_this_poll = False
        self._warned = False

    def new_poll(self) -> None:
        """Try the ledger again (once) on the next page that needs it."""
        self._down_this_poll = False

    def roots(self, tree_name: str, sizes: Iterable[int]) -> dict[int, dict[str, Any]] | None:
        """The roots of the given sizes that exist; None when the ledger is unreachable."""
        wanted = {s for s in sizes if s > 0}
        missing = sorted(s for s in wanted if (tree_name, s) not in self._roots)
        if missing:
            if self._down_this_poll:
                return None
            try:
                found = self._fetch(tree_name, missing)
            except LedgerUnreachable as exc:
                self._down_this_poll = True
                if not self._warned:
                    self._warned = True
                    self.log.warning(
                        "%s: the public ledger is unreachable (%s); Pangea consistency is not checked "
                        "(integrity.consistency = none) until it is back; hash, membership and "
                        "signature checks go on", self.component, exc)
                return None
            if self._warned:
                self._warned = False
                self.log.info("%s: the public ledger is reachable again; consistency checks resume",
                              self.component)
            for size in missing:
                root = found.get(size) or self.server_root(size)
                if root is not None:
                    if len(self._roots) >= _MAX_CACHED_ROOTS:
                        self._roots.clear()
                    self._roots[(tree_name, size)] = root
        return {s: self._roots[(tree_name, s)] for s in wanted if (tree_name, s) in self._roots}

    def _fetch(self, tree_name: str, sizes: list[int]) -> dict[int, dict[str, Any]]:
        query = _QUERY % (json.dumps([str(s) for s in sizes]), json.dumps(tree_name))
        try:
            answer = self.client.post_json("graphql", {"query": query}, auth_required=False)
            edges = answer["data"]["transactions"]["edges"]
            found: dict[int, dict[str, Any]] = {}
            for edge in edges:
                node = edge["node"]
                tags = {t["name"]: t["value"] for t in node.get("tags", [])}
                size = int(tags.get("tree_size", -1))
                if size in sizes and size not in found:
                    root = self.client.get_json(f"{node['id']}/", auth_required=False)
                    if isinstance(root, dict) and isinstance(root.get("root_hash"), str):
                        found[size] = root
            return found
        except (ForwarderError, KeyError, TypeError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, (ForwarderError,)) else f"unexpected answer ({type(exc).__name__})"
            if isinstance(exc, HttpError) and exc.status is not None and exc.status < 500:
                detail = f"HTTP {exc.status}"
            raise LedgerUnreachable(redact(detail)[:300]) from None


def consistency_verdict(item: dict[str, Any], roots: dict[int, dict[str, Any]] | None) -> str:
    """The consistency verdict of one published event, given the roots fetched for its page.

    The root of size ``leaf_index + 1`` must carry a consistency proof against the root of size
    ``leaf_index``. ``none`` when the event is unpublished, is the tree's first leaf, or a root
    is unavailable.
    """
    leaf_index = item.get("leaf_index")
    if roots is None or not item.get("published") or not isinstance(leaf_index, int) or leaf_index < 1:
        return NONE
    new = roots.get(leaf_index + 1)
    prev = roots.get(leaf_index)
    if new is None or prev is None:
        return NONE
    proof = new.get("consistency_proof")
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        return FAIL
    return PASS if verify_consistency_proof(new["root_hash"], prev["root_hash"], proof) else FAIL


def sizes_needed(items: Iterable[dict[str, Any]]) -> set[int]:
    """The root sizes a page's published events need for their consistency checks."""
    sizes: set[int] = set()
    for item in items:
        leaf_index = item.get("leaf_index")
        if item.get("published") and isinstance(leaf_index, int) and leaf_index >= 1:
            sizes.add(leaf_index)
            sizes.add(leaf_index + 1)
    return sizes
