"""The ``graph/1`` compute-graph format: records, validation, read/write.

See ``shared/contracts/graph-format.md``. A :class:`Graph` holds the file's
content as frozen records; :attr:`Graph.index` is the same graph as integer
arrays (:class:`GraphIndex`), which is what the scheduler and the memory
simulator work on, so that million-node graphs stay cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from traces.atomic import atomic_write_text
from traces.errors import GraphFormatError

__all__ = [
    "FORMAT",
    "Buffer",
    "Graph",
    "GraphIndex",
    "Node",
    "find_cycle",
    "graph_from_dict",
    "graph_to_dict",
    "read_graph",
    "write_graph",
]

FORMAT = "graph/1"


@dataclass(frozen=True, slots=True)
class Node:
    """One operation; ``workspace_bytes`` is scratch held only while it runs."""

    id: str
    op: str = ""
    workspace_bytes: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Buffer:
    """One allocation, produced by a node (or a graph input when ``producer`` is None)."""

    id: str
    size_bytes: int
    producer: str | None
    consumers: tuple[str, ...] = ()
    pinned: bool = False


@dataclass(frozen=True)
class Graph:
    """A validated graph/1 document. Build with :func:`graph_from_dict` or :meth:`build`."""

    name: str
    nodes: tuple[Node, ...]
    buffers: tuple[Buffer, ...]
    edges: tuple[tuple[str, str], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name: str,
        nodes: Iterable[Node],
        buffers: Iterable[Buffer],
        edges: Iterable[tuple[str, str]] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> Graph:
        """Build and validate (ids, sizes, acyclicity) a graph from records."""
        graph = cls(name, tuple(nodes), tuple(buffers), tuple(map(tuple, edges)), meta or {})
        return graph_from_dict(graph_to_dict(graph), source=name or "graph")

    @property
    def node_ids(self) -> list[str]:
        """Node ids in the graph's *given* order."""
        return [n.id for n in self.nodes]

    @cached_property
    def index(self) -> GraphIndex:
        """Integer-array view of the graph (built once)."""
        return GraphIndex.from_graph(self)

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass(frozen=True, eq=False)
class GraphIndex:
    """A graph as arrays: nodes are ``0..n-1`` in given order, buffers ``0..m-1``.

    ``cons_ptr/cons_idx`` is the CSR list of each buffer's consumers;
    ``succ_ptr/succ_idx`` and ``pred_ptr/pred_idx`` are the deduplicated
    dependency adjacency (producer->consumer pairs plus extra edges).
    """

    node_ids: tuple[str, ...]
    workspace: np.ndarray
    buf_size: np.ndarray
    buf_producer: np.ndarray
    buf_pinned: np.ndarray
    cons_ptr: np.ndarray
    cons_idx: np.ndarray
    dep_src: np.ndarray
    dep_dst: np.ndarray
    buf_ids: tuple[str, ...] = ()

    @property
    def n_nodes(self) -> int:
        return len(self.workspace)

    @property
    def n_buffers(self) -> int:
        return len(self.buf_size)

    @cached_property
    def position_of(self) -> dict[str, int]:
        """Node id -> index."""
        return {nid: i for i, nid in enumerate(self.node_ids)}

    @cached_property
    def succ(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (ptr, idx) of successors."""
        return _csr(self.dep_src, self.dep_dst, self.n_nodes)

    @cached_property
    def pred(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (ptr, idx) of predecessors."""
        return _csr(self.dep_dst, self.dep_src, self.n_nodes)

    @cached_property
    def succ_lists(self) -> list[list[int]]:
        ptr, idx = self.succ
        return [idx[ptr[i] : ptr[i + 1]].tolist() for i in range(self.n_nodes)]

    @cached_property
    def pred_lists(self) -> list[list[int]]:
        ptr, idx = self.pred
        return [idx[ptr[i] : ptr[i + 1]].tolist() for i in range(self.n_nodes)]

    @cached_property
    def consumer_lists(self) -> list[list[int]]:
        """Per buffer, its consumer node indices."""
        p, c = self.cons_ptr, self.cons_idx
        return [c[p[b] : p[b + 1]].tolist() for b in range(self.n_buffers)]

    @cached_property
    def produced_by(self) -> list[list[int]]:
        """Per node, the buffers it produces."""
        out: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for b, p in enumerate(self.buf_producer.tolist()):
            if p >= 0:
                out[p].append(b)
        return out

    @cached_property
    def consumed_by(self) -> list[list[int]]:
        """Per node, the buffers it reads."""
        out: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for b, cons in enumerate(self.consumer_lists):
            for c in cons:
                out[c].append(b)
        return out

    @classmethod
    def from_arrays(
        cls,
        workspace: Sequence[int] | np.ndarray,
        buf_size: Sequence[int] | np.ndarray,
        buf_producer: Sequence[int] | np.ndarray,
        cons_ptr: Sequence[int] | np.ndarray,
        cons_idx: Sequence[int] | np.ndarray,
        buf_pinned: Sequence[bool] | np.ndarray | None = None,
        extra_edges: np.ndarray | None = None,
        node_ids: Sequence[str] | None = None,
    ) -> GraphIndex:
        """Build from arrays (synthetic graphs, benchmarks); acyclicity is not checked."""
        ws = np.asarray(workspace, dtype=np.int64)
        size = np.asarray(buf_size, dtype=np.int64)
        prod = np.asarray(buf_producer, dtype=np.int64)
        ptr = np.asarray(cons_ptr, dtype=np.int64)
        idx = np.asarray(cons_idx, dtype=np.int64)
        pinned = (
            np.zeros(len(size), dtype=bool)
            if buf_pinned is None
            else np.asarray(buf_pinned, dtype=bool)
        )
        counts = np.diff(ptr)
        owner = np.repeat(np.arange(len(size)), counts)
        src = prod[owner]
        keep = src >= 0
        src, dst = src[keep], idx[keep]
        if extra_edges is not None and len(extra_edges):
            e = np.asarray(extra_edges, dtype=np.int64).reshape(-1, 2)
            src = np.concatenate([src, e[:, 0]])
            dst = np.concatenate([dst, e[:, 1]])
        n = len(ws)
        if len(src):
            key = np.unique(src * n + dst)
            src, dst = key // n, key % n
        ids = tuple(node_ids) if node_ids is not None else tuple(f"n{i}" for i in range(n))
        return cls(ids, ws, size, prod, pinned, ptr, idx, src, dst)

    @classmethod
    def from_graph(cls, graph: Graph) -> GraphIndex:
        pos = {n.id: i for i, n in enumerate(graph.nodes)}
        ptr = [0]
        idx: list[int] = []
        for b in graph.buffers:
            idx.extend(pos[c] for c in b.consumers)
            ptr.append(len(idx))
        edges = np.array([[pos[a], pos[b]] for a, b in graph.edges], dtype=np.int64)
        index = cls.from_arrays(
            workspace=[n.workspace_bytes for n in graph.nodes],
            buf_size=[b.size_bytes for b in graph.buffers],
            buf_producer=[-1 if b.producer is None else pos[b.producer] for b in graph.buffers],
            cons_ptr=ptr,
            cons_idx=idx,
            buf_pinned=[b.pinned for b in graph.buffers],
            extra_edges=edges,
            node_ids=[n.id for n in graph.nodes],
        )
        object.__setattr__(index, "buf_ids", tuple(b.id for b in graph.buffers))
        return index


def _csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
    return ptr, dst[order]


def find_cycle(n: int, succ: Sequence[Sequence[int]]) -> list[int] | None:
    """Return the nodes of one directed cycle, or None when the graph is a DAG."""
    color = [0] * n  # 0 new, 1 on stack, 2 done
    for root in range(n):
        if color[root]:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        path: list[int] = [root]
        color[root] = 1
        while stack:
            v, i = stack[-1]
            if i < len(succ[v]):
                stack[-1] = (v, i + 1)
                w = succ[v][i]
                if color[w] == 1:
                    return path[path.index(w) :]
                if color[w] == 0:
                    color[w] = 1
                    stack.append((w, 0))
                    path.append(w)
            else:
                color[v] = 2
                stack.pop()
                path.pop()
    return None


# ---------------------------------------------------------------- validation


def _fail(source: str, where: str, problem: str) -> GraphFormatError:
    return GraphFormatError(source, where, problem)


def _int(value: Any, source: str, where: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(source, where, f"must be an integer, got {value!r}")
    if value < 0:
        raise _fail(source, where, f"must be >= 0, got {value}")
    return value


def _str(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(source, where, f"must be a non-empty string, got {value!r}")
    return value


def _list(value: Any, source: str, where: str) -> list:
    if not isinstance(value, list):
        raise _fail(source, where, f"must be a list, got {type(value).__name__}")
    return value


def _obj(value: Any, source: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(source, where, f"must be an object, got {type(value).__name__}")
    return value


def graph_from_dict(doc: Any, source: str = "graph") -> Graph:
    """Validate a parsed graph/1 document; raises :class:`GraphFormatError` naming the field."""
    doc = _obj(doc, source, "(top level)")
    if doc.get("format") != FORMAT:
        raise _fail(source, "format", f"must be {FORMAT!r}, got {doc.get('format')!r}")
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise _fail(source, "name", f"must be a string, got {name!r}")
    meta = _obj(doc.get("meta", {}), source, "meta")

    nodes: list[Node] = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(doc.get("nodes"), source, "nodes")):
        raw = _obj(raw, source, f"nodes[{i}]")
        nid = _str(raw.get("id"), source, f"nodes[{i}].id")
        if nid in seen:
            raise _fail(source, f"nodes[{i}].id", f"duplicate node id {nid!r}")
        seen.add(nid)
        op = raw.get("op", "")
        if not isinstance(op, str):
            raise _fail(source, f"nodes[{i}].op", f"must be a string, got {op!r}")
        ws = _int(raw.get("workspace_bytes", 0), source, f"nodes[{i}].workspace_bytes")
        nmeta = _obj(raw.get("meta", {}), source, f"nodes[{i}].meta")
        nodes.append(Node(nid, op, ws, nmeta))

    buffers: list[Buffer] = []
    seen_buf: set[str] = set()
    for i, raw in enumerate(_list(doc.get("buffers", []), source, "buffers")):
        raw = _obj(raw, source, f"buffers[{i}]")
        bid = _str(raw.get("id"), source, f"buffers[{i}].id")
        if bid in seen_buf:
            raise _fail(source, f"buffers[{i}].id", f"duplicate buffer id {bid!r}")
        seen_buf.add(bid)
        if "size_bytes" not in raw:
            raise _fail(source, f"buffers[{i}].size_bytes", "is missing")
        size = _int(raw["size_bytes"], source, f"buffers[{i}].size_bytes")
        prod = raw.get("producer")
        if prod is not None and prod not in seen:
            raise _fail(source, f"buffers[{i}].producer", f"unknown node id {prod!r}")
        cons = _list(raw.get("consumers", []), source, f"buffers[{i}].consumers")
        for j, c in enumerate(cons):
            if not isinstance(c, str) or c not in seen:
                raise _fail(source, f"buffers[{i}].consumers[{j}]", f"unknown node id {c!r}")
        if len(set(cons)) != len(cons):
            raise _fail(source, f"buffers[{i}].consumers", "lists a node more than once")
        if prod is not None and prod in cons:
            raise _fail(
                source, f"buffers[{i}].consumers", f"node {prod!r} consumes its own output (cycle)"
            )
        pinned = raw.get("pinned", False)
        if not isinstance(pinned, bool):
            raise _fail(source, f"buffers[{i}].pinned", f"must be true or false, got {pinned!r}")
        buffers.append(Buffer(bid, size, prod, tuple(cons), pinned))

    edges: list[tuple[str, str]] = []
    for i, raw in enumerate(_list(doc.get("edges", []), source, "edges")):
        if not (isinstance(raw, list) and len(raw) == 2):
            raise _fail(source, f"edges[{i}]", f"must be a pair [before, after], got {raw!r}")
        for j, end in enumerate(raw):
            if not isinstance(end, str) or end not in seen:
                raise _fail(source, f"edges[{i}][{j}]", f"unknown node id {end!r}")
        if raw[0] == raw[1]:
            raise _fail(source, f"edges[{i}]", f"self-loop on {raw[0]!r} (cycle)")
        edges.append((raw[0], raw[1]))

    graph = Graph(name, tuple(nodes), tuple(buffers), tuple(edges), meta)
    cycle = find_cycle(len(nodes), graph.index.succ_lists)
    if cycle is not None:
        ids = graph.index.node_ids
        loop = " -> ".join(ids[v] for v in [*cycle, cycle[0]])
        raise _fail(source, "edges/buffers", f"dependencies contain a cycle: {loop}")
    return graph


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The graph as a graph/1 JSON document."""
    return {
        "format": FORMAT,
        "name": graph.name,
        "nodes": [
            {"id": n.id, "op": n.op, "workspace_bytes": n.workspace_bytes, "meta": dict(n.meta)}
            for n in graph.nodes
        ],
        "buffers": [
            {
                "id": b.id,
                "size_bytes": b.size_bytes,
                "producer": b.producer,
                "consumers": list(b.consumers),
                "pinned": b.pinned,
            }
            for b in graph.buffers
        ],
        "edges": [list(e) for e in graph.edges],
        "meta": dict(graph.meta),
    }


def read_graph(path: str | Path) -> Graph:
    """Read and validate a graph/1 file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphFormatError(str(path), "(file)", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphFormatError(str(path), "(file)", f"cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphFormatError(
            str(path), "(json)", f"malformed JSON at line {exc.lineno} col {exc.colno}: {exc.msg}"
        ) from None
    return graph_from_dict(doc, source=str(path))


def write_graph(graph: Graph, path: str | Path) -> None:
    """Write a graph/1 file atomically."""
    atomic_write_text(path, json.dumps(graph_to_dict(graph), indent=1) + "\n")
