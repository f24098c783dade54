"""An AOT FX graph as a graph/1 document, following the contract's memory model.

One graph/1 node per FX operation that can allocate. Views and aliases (found
from the op schema's alias annotation, plus ``_unsafe_view``) are not nodes:
their readers become readers of the base buffer. ``getitem`` of a multi-output
op is not a node either: each tuple element is a buffer of the producing op.
In-place ops (a written alias) read their target and are ordered against its
other readers by edges. Buffer sizes are ``numel * element_size`` of the FakeTensor
in ``node.meta['val']``. Graph outputs (saved activations in the forward,
gradients in the backward) are pinned; of the graph inputs, those the caller
keeps alive anyway are pinned (see :func:`fx_to_graph`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import fx

from traces.graph import Buffer, Graph, Node

__all__ = ["FxLayout", "fx_layout", "fx_to_graph", "is_view_node", "tensor_bytes"]


def tensor_bytes(t: torch.Tensor) -> int:
    """The contract's size of a tensor: ``numel * element_size``."""
    return int(t.numel()) * int(t.element_size())


def _schema(node: fx.Node) -> Any:
    return getattr(node.target, "_schema", None) if node.op == "call_function" else None


def is_view_node(node: fx.Node) -> bool:
    """True when the op returns an alias of an input (a view, ``alias``, ``_unsafe_view``)."""
    if node.op != "call_function":
        return False
    if node.target is torch.ops.aten._unsafe_view.default:
        return True
    schema = _schema(node)
    if schema is None or not schema.returns:
        return False
    info = schema.returns[0].alias_info
    return info is not None and not info.is_write


def _written_arg(node: fx.Node) -> fx.Node | None:
    """The argument an in-place op writes (and returns), if any."""
    schema = _schema(node)
    if schema is None:
        return None
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            return value if isinstance(value, fx.Node) else None
    return None


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


class FxLayout:
    """How FX values map to graph/1 buffers and nodes (shared by capture and replay)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.buffer_of: dict[fx.Node, str] = {}  # tensor-valued FX value -> buffer id
        self.tuple_buffers: dict[fx.Node, list[str]] = {}
        self.sizes: dict[str, int] = {}
        self.producer: dict[str, str | None] = {}
        self.compute: list[fx.Node] = []  # graph/1 nodes, in given order
        self.placeholders: list[fx.Node] = []
        self.passthrough: set[fx.Node] = set()  # views and getitems
        for node in gm.graph.nodes:
            val = node.meta.get("val")
            if node.op == "placeholder":
                self.placeholders.append(node)
                if _is_tensor(val):
                    self._new_buffer(node.name, val, None, node)
            elif node.op == "output":
                continue
            elif node.op == "call_function" and node.target is operator.getitem:
                self.passthrough.add(node)
                src, i = node.args[0], node.args[1]
                elems = self.tuple_buffers.get(src)
                if elems is not None and isinstance(i, int) and elems[i]:
                    self.buffer_of[node] = elems[i]
            elif node.op == "get_attr":  # a constant the module owns: not allocated here
                self.passthrough.add(node)
            elif is_view_node(node):
                self.passthrough.add(node)
                base = node.args[0] if node.args else None
                bid = self.buffer_of.get(base) if isinstance(base, fx.Node) else None
                if isinstance(val, (list, tuple)):  # split/unbind: every piece aliases the base
                    self.tuple_buffers[node] = [bid or ""] * len(val)
                elif bid is not None:
                    self.buffer_of[node] = bid
            else:
                self.compute.append(node)
                written = _written_arg(node)
                if written is not None and written in self.buffer_of:
                    self.buffer_of[node] = self.buffer_of[written]
                elif _is_tensor(val):
                    self._new_buffer(node.name, val, node.name, node)
                elif isinstance(val, (list, tuple)):
                    ids = []
                    for i, v in enumerate(val):
                        if _is_tensor(v):
                            bid = f"{node.name}.{i}"
                            self.sizes[bid] = tensor_bytes(v)
                            self.producer[bid] = node.name
                            ids.append(bid)
                        else:
                            ids.append("")
                    self.tuple_buffers[node] = ids

    def _new_buffer(self, bid: str, val: torch.Tensor, producer: str | None, node: fx.Node) -> None:
        self.buffer_of[node] = bid
        self.sizes[bid] = tensor_bytes(val)
        self.producer[bid] = producer

    def compute_node_of(self, node: fx.Node) -> fx.Node | None:
        """The graph/1 node that must run before ``node``'s value exists (None for inputs)."""
        while node in self.passthrough and node.op == "call_function":
            node = node.args[0]  # type: ignore[assignment]
        return node if node.op == "call_function" else None

    def read_buffers(self, node: fx.Node) -> set[str]:
        """Buffers a compute node reads (through views, getitems and tuples)."""
        out: set[str] = set()
        for inp in node.all_input_nodes:
            if inp in self.buffer_of:
                out.add(self.buffer_of[inp])
            elif inp in self.tuple_buffers:
                out.update(b for b in self.tuple_buffers[inp] if b)
        return out

    def output_buffers(self) -> set[str]:
        out: set[str] = set()
        for node in self.gm.graph.find_nodes(op="output"):
            for inp in node.all_input_nodes:
                if inp in self.buffer_of:
                    out.add(self.buffer_of[inp])
                elif inp in self.tuple_buffers:
                    out.update(b for b in self.tuple_buffers[inp] if b)
        return out


def fx_layout(gm: fx.GraphModule) -> FxLayout:
    return FxLayout(gm)


def fx_to_graph(
    gm: fx.GraphModule,
    name: str,
    *,
    input_pinned: Callable[[fx.Node], bool],
    meta: Mapping[str, Any] | None = None,
    workspace_bytes: Mapping[str, int] | None = None,
) -> Graph:
    """Convert ``gm`` to graph/1. ``input_pinned(placeholder)`` says which inputs stay alive
    (held by the caller) for the whole graph; the others are freed after their last reader."""
    lay = FxLayout(gm)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    consumers: dict[str, list[str]] = {bid: [] for bid in lay.sizes}
    edges: set[tuple[str, str]] = set()
    writers: list[tuple[fx.Node, str]] = []
    for node in lay.compute:
        for bid in sorted(lay.read_buffers(node)):
            if lay.producer[bid] != node.name and node.name not in consumers[bid]:
                consumers[bid].append(node.name)
        for inp in node.all_input_nodes:  # non-tensor data dependencies (symbolic sizes)
            if inp not in lay.buffer_of and inp not in lay.tuple_buffers:
                src = lay.compute_node_of(inp)
                if src is not None and src is not node:
                    edges.add((src.name, node.name))
        written = _written_arg(node)
        if written is not None and written in lay.buffer_of:
            writers.append((node, lay.buffer_of[written]))
    by_name = {n.name: n for n in lay.compute}
    for writer, bid in writers:  # readers before a write stay before it, readers after stay after
        for reader in consumers[bid]:
            if reader == writer.name:
                continue
            pair = (
                (reader, writer.name)
                if order[by_name[reader]] < order[writer]
                else (writer.name, reader)
            )
            edges.add(pair)
    outputs = lay.output_buffers()
    pinned_inputs = {
        lay.buffer_of[p] for p in lay.placeholders if p in lay.buffer_of and input_pinned(p)
    }
    ws = workspace_bytes or {}
    nodes = []
    for n in lay.compute:
        nmeta: dict[str, Any] = {}
        if "recompute" in n.meta:
            nmeta["recompute"] = str(n.meta["recompute"])
        if "ac_graph_id" in n.meta:
            nmeta["ac_graph_id"] = int(n.meta["ac_graph_id"])
        nodes.append(Node(n.name, str(n.target), int(ws.get(n.name, 0)), nmeta))
    buffers = [
        Buffer(
            bid,
            size,
            lay.producer[bid],
            tuple(consumers[bid]),
            bid in outputs or bid in pinned_inputs,
        )
        for bid, size in lay.sizes.items()
    ]
    return Graph.build(name, nodes, buffers, sorted(edges), dict(meta or {}))
