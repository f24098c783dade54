"""Order files: a bare JSON list of node ids, or an object with at least ``order``.

Tools print the object form ``{"method", "order", "peak_bytes", "optimal",
"lower_bound_bytes", "seconds"}`` (see ``shared/contracts/graph-format.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from traces.atomic import atomic_write_text
from traces.errors import FormatError

__all__ = ["OrderFile", "order_from_json", "read_order", "write_order"]


class OrderFile(dict):
    """The parsed order document; ``["order"]`` is always present as a list of ids."""


def order_from_json(doc: Any, source: str = "order") -> OrderFile:
    """Validate the shape of an order document (ids are checked against a graph later)."""
    if isinstance(doc, list):
        doc = {"order": doc}
    if not isinstance(doc, dict):
        raise FormatError(source, "(top level)", "must be a list of node ids or an object")
    order = doc.get("order")
    if not isinstance(order, list):
        raise FormatError(source, "order", "must be a list of node ids")
    for i, nid in enumerate(order):
        if not isinstance(nid, str):
            raise FormatError(source, f"order[{i}]", f"must be a node id string, got {nid!r}")
    return OrderFile(doc)


def read_order(path: str | Path) -> OrderFile:
    """Read an order file (list or object form)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(str(path), "(file)", "no such file") from None
    except json.JSONDecodeError as exc:
        raise FormatError(str(path), "(json)", f"malformed JSON: {exc.msg}") from None
    return order_from_json(doc, source=str(path))


def write_order(path: str | Path, doc: Mapping[str, Any] | Sequence[str]) -> None:
    """Write an order document atomically."""
    payload = list(doc) if not isinstance(doc, Mapping) else dict(doc)
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
