"""The Inductor level: fused scheduler nodes, their buffers, and imposed orders.

A captured AOT graph is compiled with ``compile_fx_inner`` (what torch.compile's
Inductor backend calls for each AOT graph). A pass registered in
``config.reorder_for_compute_comm_overlap_passes`` runs after every other
scheduler reordering (Inductor's own ``reorder_for_peak_memory`` included), so
it sees the final order; it records the graph/1 view of the scheduler nodes
there, or replaces the order with a requested one. The FX graph cache is off
for these compiles: a cache hit would skip the scheduler (compiled C++ kernels
are still cached, keyed by their source). After compiling, the order that
codegen actually used is read back from the scheduler and compared.

What the compiled wrapper does with memory beyond graph/1 (buffer reuse, aliases,
removed buffers, kernel groups) is read from each compile and folded in by
:mod:`hw.memory.wrapper_fold`.

Buffers: each scheduler buffer with its allocation size
(``compute_size_for_scheduler_buffer``); multi-output ops allocate their pieces
as separate buffers; mutated buffers are renames of the real buffer, their
readers are the real buffer's readers, and mutations become ordering edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx

from hw.memory.capture import _KIND_TAG, _base_meta, _short, input_pinned_rule, step_graph
from hw.memory.errors import VerifyError
from hw.memory.fx_capture import CapturedStep, ensure_inductor_cache, graph_fingerprint
from hw.memory.fx_graph import tensor_bytes
from hw.memory.fx_replay import measure_workspace, outputs_equal, run_measured
from hw.memory.wrapper_fold import (
    KERNEL_META_KEY,
    WrapperPlan,
    fold_reuse,
    reuse_pairs,
    wrapper_plan,
)
from traces.graph import Buffer, Graph, Node

__all__ = [
    "InductorRunner",
    "compile_inductor",
    "fold_reuse",
    "inductor_graph_of",
    "reuse_pairs",
]


def _copy_gm(gm: fx.GraphModule) -> fx.GraphModule:
    """Inductor's passes rewrite the graph in place: compile a copy."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return fx.GraphModule(gm, graph)


def _describe(nodes: list[Any], args: Sequence[Any], placeholders: list[str]) -> dict[str, Any]:
    """The graph/1 pieces of the scheduler's final node list (called inside the pass)."""
    from torch._inductor.ir import MultiOutput, MultiOutputLayout
    from torch._inductor.memory import compute_size_for_scheduler_buffer
    from torch._inductor.virtualized import V

    sched = V.graph.scheduler
    sizes = compute_size_for_scheduler_buffer(sched.name_to_buf)
    real = dict(sched.mutation_real_name)

    def root(name: str) -> str:
        seen = set()
        while name in real and name not in seen:
            seen.add(name)
            name = real[name]
        return name

    input_bytes = {
        name: tensor_bytes(a)
        for name, a in zip(placeholders, args, strict=True)
        if isinstance(a, torch.Tensor)
    }
    producer: dict[str, str] = {}
    size: dict[str, int] = {}
    node_rows = []
    extern_origins: dict[str, list[str]] = {}
    extern_kernels: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for node in nodes:
        name = node.get_name()
        node_rows.append((name, type(node).__name__))
        kinds[name] = _kind(node)
        if node.is_extern() and getattr(node, "node", None) is not None:
            extern_origins[name] = sorted(o.name for o in node.node.get_origins())
            kernel = str(getattr(node.node, "python_kernel_name", "") or "")
            op = _aten_op_name(kernel)
            if op:  # MultiOutput pieces call nothing: no workspace of their own
                extern_kernels[name] = op
        for buf in node.get_outputs():
            bname = buf.get_name()
            if bname in real:  # a mutation: same memory under a new name
                continue
            alloc, free = sizes.get(bname, (0, 0))
            producer[bname] = name
            size[bname] = int(max(alloc, free))
            if isinstance(buf.node.layout, MultiOutputLayout):
                size[bname] = 0  # the tuple itself: its pieces are the allocations
            elif isinstance(buf.node, MultiOutput) and buf.node.inputs:
                # a piece is allocated by the extern call that returns the tuple
                parent = buf.node.inputs[0].get_name()
                producer[bname] = producer.get(parent, name)
    readers: dict[str, list[str]] = {}
    edges: set[tuple[str, str]] = set()
    writes: list[tuple[str, str]] = []
    for node in nodes:
        name = node.get_name()
        for dep in node.read_writes.reads:
            r = root(dep.name)
            if (r in size or r in input_bytes) and producer.get(r) != name:
                readers.setdefault(r, [])
                if name not in readers[r]:
                    readers[r].append(name)
        for buf in node.get_outputs():
            if buf.get_name() in real:
                writes.append((name, root(buf.get_name())))
        for dep in node.unmet_dependencies:  # weak/ordering deps on other nodes
            src = sched.name_to_buf.get(dep.name)
            if src is not None:
                src_node = sched.name_to_fused_node.get(src.defining_op_name())
                if src_node is not None and src_node.get_name() != name:
                    edges.add((src_node.get_name(), name))
    position = {n: i for i, (n, _) in enumerate(node_rows)}
    for writer, r in writes:
        for reader in readers.get(r, []):
            if reader != writer:
                a, b = sorted((reader, writer), key=position.__getitem__)
                edges.add((a, b))
    return {
        "nodes": node_rows,
        "producer": producer,
        "size": size,
        "readers": readers,
        "edges": sorted(e for e in edges if e[0] in position and e[1] in position),
        "inputs": input_bytes,
        "outputs": [root(n) for n in V.graph.get_output_names()],
        "extern_origins": extern_origins,
        "extern_kernels": extern_kernels,
        "kinds": kinds,
    }


def _aten_op_name(kernel: str) -> str:
    """The aten op a wrapper call runs, as the profiler names it (``aten::<op>``):
    ``extern_kernels.addmm`` -> ``addmm``; ``aten.randint.low_out`` and
    ``torch.ops.aten.convolution_backward.default`` -> the name after ``aten`` (the rest
    is the overload)."""
    parts = [p for p in kernel.split(".") if p]
    if "aten" in parts:
        i = len(parts) - 1 - parts[::-1].index("aten")
        return parts[i + 1] if i + 1 < len(parts) else ""
    parts = [p for p in parts if p not in ("default", "out")]
    return parts[-1] if parts else ""


def _kind(node: Any) -> str:
    """Which code path emits the node: the C++ backend flushes its kernel group before
    extern and template nodes (see :mod:`hw.memory.wrapper_fold`)."""
    from torch._inductor.scheduler import NopKernelSchedulerNode

    if node.is_extern():
        return "extern"
    if node.is_template():
        return "template"
    if isinstance(node, NopKernelSchedulerNode):
        return "nop"
    return "generated"


def compile_inductor(
    gm: fx.GraphModule,
    args: Sequence[Any],
    kind: str,
    order: Sequence[str] | None = None,
    *,
    reorder_for_peak_memory: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Compile ``gm`` with Inductor; impose ``order`` (scheduler node names) when given.

    Returns the boxed compiled callable and a record with ``final_order`` (what
    codegen used), ``described`` (graph/1 pieces of the scheduler state) and
    ``removed_buffers`` (scheduler buffers codegen never allocated).
    """
    from torch._inductor import config
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.virtualized import V

    ensure_inductor_cache()
    rec: dict[str, Any] = {}
    placeholders = [n.name for n in gm.graph.find_nodes(op="placeholder")]

    def last_pass(nodes: list[Any]) -> list[Any]:
        rec["scheduler"] = V.graph.scheduler
        rec["graph_lowering"] = V.graph
        if order is not None:
            by_name = {n.get_name(): n for n in nodes}
            if set(order) != set(by_name) or len(order) != len(by_name):
                rec["mismatch"] = sorted(set(order) ^ set(by_name))[:3]
                return nodes
            nodes = [by_name[n] for n in order]
        rec["described"] = _describe(nodes, args, placeholders)
        return nodes

    patch = {
        "fx_graph_cache": False,
        "reorder_for_peak_memory": reorder_for_peak_memory,
        "reorder_for_compute_comm_overlap": True,
        "reorder_for_compute_comm_overlap_passes": [last_pass],
    }
    with config.patch(patch):
        compiled = compile_fx_inner(_copy_gm(gm), list(args), is_backward=kind == "backward")
    if "mismatch" in rec:
        raise VerifyError(
            f"order names are not this compile's scheduler nodes, e.g. {rec['mismatch']}"
        )
    rec["final_order"] = [n.get_name() for n in rec["scheduler"].nodes]
    rec["removed_buffers"] = sorted(rec.pop("graph_lowering").removed_buffers)
    del rec["scheduler"]
    return compiled, rec


def extern_workspace(
    compiled: Any, args: Sequence[Any], order: Sequence[str], kernels: dict[str, str]
) -> dict[str, int] | None:
    """Per extern node, the temporaries its aten call allocates inside the compiled code.

    The compiled step runs once under the profiler; each top-level aten op event is
    an aten call of the wrapper, in program order; the k-th extern node of ``order``
    is matched to the next event of its op name. None when the matching fails.
    """
    from torch._C._profiler import _EventType

    from hw.memory.fx_replay import _clone, single_thread
    from hw.memory.tracker import _quiet_profiler, replay_allocations

    with single_thread(), torch.no_grad():
        compiled([_clone(a) for a in args])
        with _quiet_profiler():
            prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            with prof:
                compiled([_clone(a) for a in args])
    roots = []  # outermost aten ops (the wrapper's calls), below any record_function scopes
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation:
            continue
        if e.name.startswith("aten::"):
            roots.append(e)
        else:
            stack.extend(e.children)
    roots.sort(key=lambda e: e.start_time_ns)
    out: dict[str, int] = {}
    i = 0
    for node in order:
        if node not in kernels:
            continue
        want = f"aten::{kernels[node]}"
        while i < len(roots) and roots[i].name != want:
            i += 1
        if i == len(roots):
            return None
        events, stack = [], list(roots[i].children)
        while stack:
            e = stack.pop()
            stack.extend(e.children)
            if e.tag == _EventType.Allocation and str(e.extra_fields.device) == "cpu":
                f = e.extra_fields
                events.append((e.start_time_ns, int(f.ptr), int(f.alloc_size)))
        peak, end, _ = replay_allocations(events)
        if peak > end:
            out[node] = peak - max(end, 0)
        i += 1
    return out


def _to_graph(
    described: dict[str, Any],
    name: str,
    kind: str,
    meta: dict[str, Any],
    fx_workspace: dict[str, int] | None = None,
) -> Graph:
    """graph/1 of the scheduler state. Extern kernels (aten calls such as convolution
    backward) keep the op-internal temporaries measured for their FX origins; generated
    kernels allocate nothing but their outputs."""
    rule = input_pinned_rule(kind)
    outputs = set(described["outputs"])
    ws = fx_workspace or {}
    origins = described.get("extern_origins", {})
    measured = described.get("extern_workspace")
    nodes = [
        Node(
            n,
            op,
            measured.get(n, 0)
            if measured is not None
            else max((ws.get(o, 0) for o in origins.get(n, [])), default=0)
            if n in described.get("extern_kernels", {})
            else 0,
            {KERNEL_META_KEY: described["kinds"][n]} if "kinds" in described else {},
        )
        for n, op in described["nodes"]
    ]
    buffers = []
    for inp, size in described["inputs"].items():
        stub = fx.Node(fx.Graph(), inp, "placeholder", inp, (), {})
        buffers.append(
            Buffer(
                inp,
                size,
                None,
                tuple(described["readers"].get(inp, [])),
                rule(stub) or inp in outputs,
            )
        )
    for buf, size in described["size"].items():
        buffers.append(
            Buffer(
                buf,
                size,
                described["producer"][buf],
                tuple(described["readers"].get(buf, [])),
                buf in outputs,
            )
        )
    return Graph.build(name, nodes, buffers, [tuple(e) for e in described["edges"]], meta)


def inductor_graph_of(step: CapturedStep, kind: str) -> Graph:
    """The Inductor-level graph/1 of one of the step's graphs (Inductor's default order)."""
    return InductorRunner(step, kind).default_graph()


class InductorRunner:
    """Compiles and runs orders of one captured graph at the Inductor level."""

    def __init__(self, step: CapturedStep, kind: str, graph: Graph | None = None) -> None:
        self.gm, self.args = step_graph(step, kind)
        self.kind = kind
        self.device = step.spec.device
        rule = input_pinned_rule(kind)
        self.pinned = [rule(p) for p in self.gm.graph.find_nodes(op="placeholder")]
        compiled, rec = compile_inductor(self.gm, self.args, kind)
        source = getattr(compiled, "source_code", "") or ""
        self.default_reuse_pairs = reuse_pairs(source)
        self.last_reuse_pairs: list[tuple[str, str]] = []
        self.spec = step.spec
        self.described = rec["described"]
        self.default_order = rec["final_order"]
        self.default_plan = wrapper_plan(
            source, self.default_order, self.described["kinds"], self.device,
            rec["removed_buffers"],
        )  # fmt: skip
        self.last_plan: WrapperPlan | None = None
        if self.device == "cpu":
            self.described["extern_workspace"] = extern_workspace(
                compiled, self.args, self.default_order, self.described["extern_kernels"]
            )
        self.reference, peak = run_measured(compiled, self.args, self.pinned, self.device)
        self.default_peak_bytes = peak.peak_bytes

    def default_graph(self) -> Graph:
        """The graph/1 of Inductor's default order (as :func:`inductor_graph_of`, no recompile)."""
        meta = _base_meta(self.spec, self.kind, "inductor", graph_fingerprint(self.gm))
        cpu = self.device == "cpu"
        if not cpu:
            meta["workspace"] = "none"
        elif self.described.get("extern_workspace") is not None:
            meta["workspace"] = "measured (extern kernels, in the compiled code)"
        else:
            meta["workspace"] = "measured (extern kernels, from their FX ops)"
        name = f"{_short(self.spec.spec)}-{self.spec.ac.value}-{_KIND_TAG[self.kind]}-inductor"
        ws = measure_workspace(self.gm, self.args) if cpu else {}
        return _to_graph(self.described, name, self.kind, meta, ws)

    def measure(self, order: Sequence[str]) -> tuple[int, bool, bool]:
        """``(measured_peak_bytes, order_applied, matches_default_result)``."""
        compiled, rec = compile_inductor(self.gm, self.args, self.kind, order)
        source = getattr(compiled, "source_code", "") or ""
        self.last_reuse_pairs = reuse_pairs(source)
        self.last_plan = wrapper_plan(
            source, rec["final_order"], self.described["kinds"], self.device,
            rec["removed_buffers"],
        )  # fmt: skip
        result, peak = run_measured(compiled, self.args, self.pinned, self.device)
        applied = rec["final_order"] == list(order)
        return peak.peak_bytes, applied, outputs_equal(result, self.reference)
