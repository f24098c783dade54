"""An AOT FX graph as a graph/1 document, following the contract's memory model.

One graph/1 node per FX operation that can allocate. Views and aliases (found
from the op schema's alias annotation, plus ``_unsafe_view``) are not nodes:
their readers become readers of the base buffer. ``getitem`` of a multi-output
op is not a node either: each tuple element is a buffer of the producing op.
In-place ops (a written alias) read their target and are ordered against its
other readers by edges; so are the ops that draw from the global random generator
(dropout's ``rand``, checkpointing's ``run_and_save_rng_state``), in their given
order, since the generator is state the functional graph does not show. Buffer
sizes are ``numel * element_size`` of the FakeTensor in ``node.meta['val']``.
Graph outputs (saved activations in the forward, gradients in the backward) are
pinned; of the graph inputs, those the caller keeps alive anyway are pinned (see
:func:`fx_to_graph`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import fx

from traces.graph import Buffer, Graph, Node

__all__ = [
    "FILLED_VAL",
    "FxLayout",
    "consumes_generator",
    "fill_missing_values",
    "fx_layout",
    "fx_to_graph",
    "is_view_node",
    "tensor_bytes",
]

FILLED_VAL = "deltasim_val"
"""Node meta key of a value's shape and dtype (meta-device tensors) where the AOT graph
has no ``val``: the RNG higher-order ops of checkpointing (``run_and_save_rng_state``,
``run_with_rng_state``) are traced without one."""


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


def _val(node: fx.Node) -> Any:
    val = node.meta.get("val")
    return node.meta.get(FILLED_VAL) if val is None else val


def _meta_like(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
    if isinstance(v, (list, tuple)):
        return type(v)(_meta_like(x) for x in v)
    return None


def fill_missing_values(gm: fx.GraphModule, args: Sequence[Any]) -> int:
    """Record (under :data:`FILLED_VAL`) the shape and dtype of every compute node that has
    no ``val``, by running ``gm`` once on copies of ``args`` with the global RNG state
    forked (the caller's random stream is untouched). Returns how many were filled."""
    missing = {n for n in gm.graph.nodes if n.op == "call_function" and n.meta.get("val") is None}
    if not missing:
        return 0
    filled = 0

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            nonlocal filled
            out = super().run_node(n)
            if n in missing:
                n.meta[FILLED_VAL] = _meta_like(out)
                filled += 1
            return out

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    copies = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        _Recorder(gm).run(*copies)
    return filled


def consumes_generator(node: fx.Node) -> bool:
    """Whether running ``node`` eagerly draws from (advances) the global random generator:
    ops tagged ``nondeterministic_seeded`` (``rand``, ``inductor_seeds``), the eager forms of
    Inductor's random prims, and checkpointing's ``run_and_save_rng_state``
    (``run_with_rng_state`` restores the state it found, so it advances nothing)."""
    if node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", "")
    if name == "run_and_save_rng_state" or name.split(".")[0] in _EAGER_DRAWING_PRIMS:
        return True
    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags


# Inductor's random prims, which the FX graph runs eagerly: their eager forms ignore the
# seed argument and draw from the global generator (Inductor's compiled kernels do not)
_EAGER_DRAWING_PRIMS = frozenset({"inductor_random", "inductor_randint"})


class FxLayout:
    """How FX values map to graph/1 buffers and nodes (shared by capture and replay)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.buffer_of: dict[fx.Node, str] = {}  # tensor-valued FX value -> buffer id
        self.tuple_buffers: dict[fx.Node, list[str]] = {}  # every leaf buffer of a tuple
        self._elements: dict[fx.Node, list[Any]] = {}  # tuple element -> id or nested list
        self.sizes: dict[str, int] = {}
        self.producer: dict[str, str | None] = {}
        self.compute: list[fx.Node] = []  # graph/1 nodes, in given order
        self.placeholders: list[fx.Node] = []
        self.passthrough: set[fx.Node] = set()  # views and getitems
        for node in gm.graph.nodes:
            val = _val(node)
            if node.op == "placeholder":
                self.placeholders.append(node)
                if _is_tensor(val):
                    self._new_buffer(node.name, val, None, node)
            elif node.op == "output":
                continue
            elif node.op == "call_function" and node.target is operator.getitem:
                self.passthrough.add(node)
                src, i = node.args[0], node.args[1]
                elems = self._elements.get(src)  # type: ignore[arg-type]
                if elems is not None and isinstance(i, int):
                    if isinstance(elems[i], list):  # a nested tuple (run_and_save_rng_state)
                        self._set_tuple(node, elems[i])
                    elif elems[i]:
                        self.buffer_of[node] = elems[i]
            elif node.op == "get_attr":  # a constant the module owns: not allocated here
                self.passthrough.add(node)
            elif is_view_node(node):
                self.passthrough.add(node)
                base = node.args[0] if node.args else None
                bid = self.buffer_of.get(base) if isinstance(base, fx.Node) else None
                if isinstance(val, (list, tuple)):  # split/unbind: every piece aliases the base
                    self._set_tuple(node, [bid or ""] * len(val))
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
                    self._set_tuple(node, self._tuple_ids(node.name, val, node.name))

    def _tuple_ids(self, prefix: str, val: Any, producer: str) -> list[Any]:
        """Buffer ids of a (possibly nested) tuple value: ``name.i`` (``name.i.j`` nested)."""
        ids: list[Any] = []
        for i, v in enumerate(val):
            bid = f"{prefix}.{i}"
            if _is_tensor(v):
                self.sizes[bid] = tensor_bytes(v)
                self.producer[bid] = producer
                ids.append(bid)
            elif isinstance(v, (list, tuple)):
                ids.append(self._tuple_ids(bid, v, producer))
            else:
                ids.append("")
        return ids

    def _set_tuple(self, node: fx.Node, elements: list[Any]) -> None:
        self._elements[node] = elements
        leaves: list[str] = []
        stack = list(elements)
        while stack:
            e = stack.pop()
            if isinstance(e, list):
                stack.extend(e)
            elif e:
                leaves.append(e)
        self.tuple_buffers[node] = sorted(set(leaves))

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
    # the global generator is a hidden state threaded through random ops: keep their given
    # order, so that every order draws the same random numbers for the same op
    draws = [n.name for n in lay.compute if consumes_generator(n)]
    edges.update(itertools.pairwise(draws))
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
