"""Graphs as flat arrays, for generators that must scale to a million nodes.

A :class:`GraphArrays` is cheap to build with numpy; ``.to_index()`` hands it to the
memory simulator directly and ``.to_graph()`` builds validated graph/1 records.
:class:`GraphBuilder` assembles named graphs node by node (consumers may be added
later), and :func:`split_forward_backward` cuts a joint graph the way AOTAutograd
partitions forward and backward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scheduler.errors import SchedulerError
from traces.graph import Buffer, Graph, GraphIndex, Node, graph_from_dict, graph_to_dict

__all__ = ["GraphArrays", "GraphBuilder", "consumer_csr", "split_forward_backward"]


@dataclass(frozen=True, eq=False)
class GraphArrays:
    """A graph as arrays: node ``i`` is the i-th of the given order, buffer ``j`` has
    producer ``buf_producer[j]`` (-1 for a graph input) and consumers
    ``cons_idx[cons_ptr[j]:cons_ptr[j+1]]``; ``edges`` are extra ``[before, after]`` pairs."""

    name: str
    workspace_bytes: np.ndarray
    buf_size_bytes: np.ndarray
    buf_producer: np.ndarray
    buf_pinned: np.ndarray
    cons_ptr: np.ndarray
    cons_idx: np.ndarray
    edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    ops: tuple[str, ...] | None = None
    node_names: tuple[str, ...] | None = None
    buf_names: tuple[str, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.workspace_bytes)

    @property
    def n_buffers(self) -> int:
        return len(self.buf_size_bytes)

    def to_index(self) -> GraphIndex:
        """The simulator's array view, without building any Python records."""
        return GraphIndex.from_arrays(
            self.workspace_bytes,
            self.buf_size_bytes,
            self.buf_producer,
            self.cons_ptr,
            self.cons_idx,
            buf_pinned=self.buf_pinned,
            extra_edges=self.edges,
            node_ids=self.node_names,
        )

    def to_graph(self, *, validate: bool = True) -> Graph:
        """Graph records; ``validate`` runs the full graph/1 validation (ids, acyclicity)."""
        names = self.node_names or tuple(f"n{i}" for i in range(self.n_nodes))
        bnames = self.buf_names or tuple(f"b{j}" for j in range(self.n_buffers))
        ops = self.ops or ("op",) * self.n_nodes
        nodes = tuple(
            Node(nid, op, ws)
            for nid, op, ws in zip(names, ops, self.workspace_bytes.tolist(), strict=True)
        )
        ptr = self.cons_ptr.tolist()
        cons = self.cons_idx.tolist()
        buffers = tuple(
            Buffer(
                bid,
                size,
                None if prod < 0 else names[prod],
                tuple(names[c] for c in cons[ptr[j] : ptr[j + 1]]),
                pinned,
            )
            for j, (bid, size, prod, pinned) in enumerate(
                zip(
                    bnames,
                    self.buf_size_bytes.tolist(),
                    self.buf_producer.tolist(),
                    self.buf_pinned.tolist(),
                    strict=True,
                )
            )
        )
        edges = tuple((names[a], names[b]) for a, b in self.edges.tolist())
        graph = Graph(self.name, nodes, buffers, edges, dict(self.meta))
        if validate:
            graph = graph_from_dict(graph_to_dict(graph), source=self.name)
        return graph


def consumer_csr(
    n_buffers: int, owner: np.ndarray, consumer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(cons_ptr, cons_idx)`` of (buffer, consumer) pairs, deduplicated; each buffer's
    consumers come out sorted."""
    if len(owner):
        key = np.unique(owner.astype(np.int64) * (int(consumer.max()) + 1) + consumer)
        owner, consumer = np.divmod(key, int(consumer.max()) + 1)
    ptr = np.zeros(n_buffers + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_buffers), out=ptr[1:])
    return ptr, consumer.astype(np.int64)


class GraphBuilder:
    """Accumulates named nodes and buffers; consumers can be added after creation."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ops: list[str] = []
        self.ws: list[int] = []
        self.bnames: list[str] = []
        self.bsize: list[int] = []
        self.bprod: list[int] = []
        self.bpin: list[bool] = []
        self.owner: list[int] = []
        self.cons: list[int] = []

    def node(self, name: str, op: str, reads: Sequence[int] = (), workspace_bytes: int = 0) -> int:
        v = len(self.names)
        self.names.append(name)
        self.ops.append(op)
        self.ws.append(workspace_bytes)
        for b in reads:
            self.owner.append(b)
            self.cons.append(v)
        return v

    def buf(self, name: str, size_bytes: int, producer: int, pinned: bool = False) -> int:
        self.bnames.append(name)
        self.bsize.append(size_bytes)
        self.bprod.append(producer)
        self.bpin.append(pinned)
        return len(self.bnames) - 1

    def op(
        self,
        name: str,
        op: str,
        reads: Sequence[int],
        out_bytes: int,
        *,
        workspace_bytes: int = 0,
        pinned: bool = False,
    ) -> int:
        """A node with one output buffer named like the node; returns the buffer."""
        v = self.node(name, op, reads, workspace_bytes)
        return self.buf(name, out_bytes, v, pinned)

    def finish(self, name: str, meta: Mapping[str, Any]) -> GraphArrays:
        ptr, idx = consumer_csr(
            len(self.bsize), np.asarray(self.owner, np.int64), np.asarray(self.cons, np.int64)
        )
        return GraphArrays(
            name,
            np.asarray(self.ws, dtype=np.int64),
            np.asarray(self.bsize, dtype=np.int64),
            np.asarray(self.bprod, dtype=np.int64),
            np.asarray(self.bpin, dtype=bool),
            ptr,
            idx,
            ops=tuple(self.ops),
            node_names=tuple(self.names),
            buf_names=tuple(self.bnames),
            meta=dict(meta),
        )


def split_forward_backward(graph: GraphArrays, n_forward: int, part: str) -> GraphArrays:
    """The forward or backward half of a joint graph whose first ``n_forward`` nodes are
    the forward, cut the way AOTAutograd partitions it.

    Forward: its nodes, the graph inputs it reads, and the buffers it produces; a buffer
    that backward also reads is a saved activation and becomes pinned (an output handed
    to backward). Backward: its nodes and buffers; a buffer produced by the forward that
    backward reads becomes an unpinned graph input (freed after its last use), graph
    inputs it reads (parameters) keep their pinning. Consumers outside the part are
    dropped, and so are extra edges that cross the cut.
    """
    if part not in ("forward", "backward"):
        raise SchedulerError(f"part must be 'joint', 'forward' or 'backward', got {part!r}")
    n, m = graph.n_nodes, graph.n_buffers
    forward = np.arange(n) < n_forward
    keep_node = forward if part == "forward" else ~forward
    owner = np.repeat(np.arange(m), np.diff(graph.cons_ptr))
    cons = graph.cons_idx
    prod = graph.buf_producer
    pair_in = keep_node[cons]
    produced_here = (prod >= 0) & keep_node[np.maximum(prod, 0)]
    read_here = np.bincount(owner[pair_in], minlength=m) > 0
    read_elsewhere = np.bincount(owner[~pair_in], minlength=m) > 0
    if part == "forward":
        keep_buf = produced_here | ((prod < 0) & read_here)
        new_prod, pinned = prod, graph.buf_pinned | (produced_here & read_elsewhere)
    else:
        keep_buf = produced_here | read_here
        saved = (prod >= 0) & ~produced_here & read_here
        new_prod, pinned = np.where(saved, -1, prod), graph.buf_pinned & ~saved
    node_label = np.cumsum(keep_node) - 1
    buf_label = np.cumsum(keep_buf) - 1
    pair = pair_in & keep_buf[owner]
    ptr, idx = consumer_csr(int(keep_buf.sum()), buf_label[owner[pair]], node_label[cons[pair]])
    new_prod = new_prod[keep_buf]
    new_prod = np.where(new_prod >= 0, node_label[np.maximum(new_prod, 0)], -1)
    edges = graph.edges
    if len(edges):
        edges = edges[keep_node[edges[:, 0]] & keep_node[edges[:, 1]]]
        edges = node_label[edges]
    kept = np.flatnonzero(keep_node).tolist()
    kept_buf = np.flatnonzero(keep_buf).tolist()
    return GraphArrays(
        f"{graph.name}-{part}",
        graph.workspace_bytes[keep_node],
        graph.buf_size_bytes[keep_buf],
        new_prod.astype(np.int64),
        pinned[keep_buf],
        ptr,
        idx,
        edges.reshape(-1, 2).astype(np.int64),
        ops=None if graph.ops is None else tuple(graph.ops[i] for i in kept),
        node_names=None if graph.node_names is None else tuple(graph.node_names[i] for i in kept),
        buf_names=None if graph.buf_names is None else tuple(graph.buf_names[j] for j in kept_buf),
        meta={**graph.meta, "part": part},
    )
