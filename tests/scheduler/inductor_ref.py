"""Run torch Inductor's own reordering heuristics on a graph/1 graph, as a test oracle.

Builds duck-typed stand-ins for Inductor's scheduler nodes and buffers from a
graph/1 graph, lets Inductor's own ``prepare_planning_info`` fill in their
planning info (so the mapping of graph inputs, outputs and multi-reader buffers
is Inductor's, not ours), then calls ``topological_sort_lpmf/bfs/dfs`` from
``torch._inductor.memory`` and returns node indices. Test-only: imports torch.

Naming follows Inductor's conventions: pinned graph inputs are called
``primals_*`` (which Inductor treats as non-freeable), unpinned ones ``in*``;
pinned node outputs are the graph outputs; an extra edge ``[u, v]`` becomes a
fake ``WeakDep`` of ``v`` on ``u``'s first output (ordering only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from traces.graph import Graph

__all__ = ["InductorUnsupported", "inductor_orders"]


class InductorUnsupported(Exception):
    """The graph uses something Inductor's data model cannot express."""


@dataclass(eq=False)
class _Dep:
    name: str


@dataclass(eq=False)
class _ReadWrites:
    reads: list[Any]


@dataclass(eq=False)
class _IRNode:
    """What ``compute_size_for_scheduler_buffer`` reads: layout, numel, dtype."""

    numel: int
    layout: Any = None

    def get_numel(self) -> int:
        return self.numel

    def get_dtype(self) -> Any:
        import torch

        return torch.uint8


@dataclass(eq=False)
class _Buffer:
    name: str
    node: _IRNode
    mpi_buffer: Any = None

    def get_name(self) -> str:
        return self.name


@dataclass(eq=False)
class _Node:
    name: str
    index: int
    outputs: list[_Buffer] = field(default_factory=list)
    unmet_dependencies: list[Any] = field(default_factory=list)
    read_writes: _ReadWrites = field(default_factory=lambda: _ReadWrites([]))
    mpi_node: Any = None

    def get_name(self) -> str:
        return self.name

    def get_outputs(self) -> list[_Buffer]:
        return self.outputs

    def get_buffer_names(self) -> list[str]:
        return [b.name for b in self.outputs]


class _SizeVars:
    def optimization_hint(self, expr: int, fallback: int = 0) -> int:
        return int(expr)


class _Scheduler:
    mutation_real_name: dict[str, str] = {}  # noqa: RUF012 (read-only stand-in)


class _GraphHandler:
    """The few ``V.graph`` members the planning code reads."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.name = ""
        self.sizevars = _SizeVars()
        self.scheduler = _Scheduler()
        self._sizes = sizes

    def get_dep_size_hint(self, dep: Any, count_bytes: bool = True) -> int:
        return self._sizes[dep.name]


def inductor_orders(graph: Graph) -> dict[str, list[int]]:
    """Inductor's lpmf, bfs and dfs orders of ``graph`` as node indices (given order)."""
    from torch._inductor import memory
    from torch._inductor.dependencies import WeakDep
    from torch._inductor.virtualized import V
    from torch.utils._ordered_set import OrderedSet

    index = graph.index
    pos = index.position_of
    nodes = [_Node(f"op{i}", i) for i in range(len(graph.nodes))]
    names: list[str] = []
    sizes: dict[str, int] = {}
    graph_inputs: OrderedSet[str] = OrderedSet()
    graph_outputs: OrderedSet[str] = OrderedSet()
    name_to_buf: dict[str, _Buffer] = {}
    for b, buf in enumerate(graph.buffers):
        if buf.producer is None:
            name = f"primals_{b}" if buf.pinned else f"in{b}"
            graph_inputs.add(name)
        else:
            name = f"buf{b}"
            sched_buf = _Buffer(name, _IRNode(buf.size_bytes))
            nodes[pos[buf.producer]].outputs.append(sched_buf)
            name_to_buf[name] = sched_buf
            if buf.pinned:
                graph_outputs.add(name)
        names.append(name)
        sizes[name] = buf.size_bytes
        for c in buf.consumers:
            reader = nodes[pos[c]]
            reader.read_writes.reads.append(_Dep(name))
            if buf.producer is not None:
                reader.unmet_dependencies.append(_Dep(name))
    for u, v in graph.edges:
        before = nodes[pos[u]]
        if not before.outputs:
            raise InductorUnsupported(f"edge from {u!r}, which has no output buffer")
        dep = WeakDep(before.outputs[0].name, mutating_buf=nodes[pos[v]].name, is_fake=True)
        nodes[pos[v]].unmet_dependencies.append(dep)

    with V.set_graph_handler(_GraphHandler(sizes)):  # type: ignore[arg-type]
        _, freeable = memory.prepare_planning_info(
            nodes,  # type: ignore[arg-type]
            name_to_buf,  # type: ignore[arg-type]
            {n.name: n for n in nodes},  # type: ignore[misc]
            graph_inputs,
            graph_outputs,
        )
        lpmf = memory.topological_sort_lpmf(nodes, freeable, name_to_buf, graph_outputs)  # type: ignore[arg-type]
        bfs = memory.topological_sort_bfs(nodes)  # type: ignore[arg-type]
        dfs = memory.topological_sort_dfs(nodes)  # type: ignore[arg-type]
    return {
        "lpmf": [n.index for n in lpmf],  # type: ignore[attr-defined]
        "bfs": [n.index for n in bfs],  # type: ignore[attr-defined]
        "dfs": [n.index for n in dfs],  # type: ignore[attr-defined]
    }
