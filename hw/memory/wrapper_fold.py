"""What Inductor's compiled Python wrapper does with memory, folded into graph/1.

graph/1 allocates a buffer when its producer runs and frees it after its last
reader. The wrapper that Inductor generates for one order departs from that in
two ways, both decided at compile time, before anything runs, and both folded
into the graph here so the simulator predicts what the allocator sees:

- **Buffer reuse** (``bufX = bufY; del bufY  # reuse``): an allocation takes a
  freed block of the same size from the wrapper's pool, so the freed block stays
  allocated until it is taken, and a kernel may write into an input that dies
  there (:func:`reuse_pairs`, :func:`fold_reuse`).
- **Kernel groups** (CPU): the C++ backend emits every run of consecutive
  generated-kernel nodes between two extern calls as *one* C++ kernel. The
  wrapper allocates all of the run's outputs before calling it and frees the
  buffers whose last reader is in the run only after it returns (Inductor's
  scheduler frees buffers when the backend flushes, and the C++ backend flushes
  only before an extern or template node, past 500 kernel arguments, or at the
  end). So inside a run, every output is live from the run's first node and
  every input it reads to the run's last node (:func:`kernel_groups`,
  :func:`fold_kernel_groups`). The Triton (GPU) backend frees after each kernel:
  every node is its own group. The 500-argument flush cannot be seen from the
  graph, so the groups are checked against the number of kernel calls in the
  compiled code (:func:`groups_match_source`).

- **Aliases** (``bufA = reinterpret_tensor(bufB, ...)  # alias``): a buffer with a
  non-owning layout is a slice of another, e.g. each input of a ``cat`` written
  straight into its place in the output. It allocates nothing; the base block is
  allocated when the first slice is, and lives while any slice or the base is read
  (:func:`alias_pairs`, :func:`fold_alias`).

- **Removed buffers**: codegen drops scheduler buffers that turn out to be kernel-local
  or dead outputs of a fused kernel; they are never allocated (:func:`fold_removed`).

:func:`wrapper_plan` reads these from one compile's code, :func:`fold_compiled`
folds them in. Nothing here imports torch: the folds work on graph/1 and on the
wrapper's text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from traces.graph import Buffer, Graph

__all__ = [
    "KERNEL_META_KEY",
    "WrapperPlan",
    "alias_pairs",
    "fold_alias",
    "fold_compiled",
    "fold_kernel_groups",
    "fold_removed",
    "fold_reuse",
    "groups_match_source",
    "kernel_call_count",
    "kernel_groups",
    "node_kinds",
    "reuse_pairs",
    "wrapper_plan",
]

KERNEL_META_KEY = "kernel"
"""Node meta key of an Inductor-level graph: ``extern``, ``template``, ``nop`` or
``generated`` (which of Inductor's code paths emits the node)."""

_REUSE = re.compile(r"^\s*(\w+) = (?:reinterpret_tensor\()?(\w+)\b.*; del \2\s+# reuse\s*$")
_ALIAS = re.compile(r"^\s*(\w+) = reinterpret_tensor\((\w+),.*\s# alias\s*$")
_KERNEL_DEF = re.compile(r"^(\w+) = async_compile\.cpp_pybinding\(", re.MULTILINE)
_CALL_LINE = re.compile(r"^\s+(\w+)\(")
_FLUSHING = ("extern", "template")


def reuse_pairs(source_code: str) -> list[tuple[str, str]]:
    """``(new, old)`` pairs of the wrapper's ``new = old; del old  # reuse`` lines: the
    new buffer takes the old one's memory instead of allocating."""
    return [(m[1], m[2]) for line in source_code.splitlines() if (m := _REUSE.match(line))]


def fold_reuse(graph: Graph, pairs: Sequence[tuple[str, str]]) -> Graph:
    """The graph with Inductor's buffer reuse decided at compile time folded in.

    A reused buffer is one allocation from the old buffer's producer to the new
    buffer's last reader: the old buffer gains the new one's producer and readers,
    the new one becomes 0 bytes. This covers both reuse terms: a freed buffer kept
    in the wrapper's pool until a same-size allocation takes it (real memory above
    graph/1), and a kernel writing into an input that dies there (below it).
    """
    by_id = {b.id: b for b in graph.buffers}
    owner: dict[str, str] = {}

    def find(x: str) -> str:
        while x in owner:
            x = owner[x]
        return x

    extra: dict[str, set[str]] = {}
    pinned: dict[str, bool] = {}
    zero: set[str] = set()
    for new, old in pairs:
        if new not in by_id or old not in by_id:
            continue
        root = find(old)
        if root == new:
            continue
        owner[new] = root
        nb = by_id[new]
        add = extra.setdefault(root, set())
        add.update(nb.consumers)
        add.update(extra.pop(new, set()))
        if nb.producer is not None:
            add.add(nb.producer)
        pinned[root] = pinned.get(root, by_id[root].pinned) or nb.pinned or pinned.pop(new, False)
        zero.add(new)
    buffers = []
    for b in graph.buffers:
        if b.id in zero:
            buffers.append(Buffer(b.id, 0, b.producer, b.consumers, False))
        elif b.id in extra:
            cons = [c for c in (*b.consumers, *sorted(extra[b.id])) if c != b.producer]
            buffers.append(
                Buffer(b.id, b.size_bytes, b.producer, tuple(dict.fromkeys(cons)), pinned[b.id])
            )
        else:
            buffers.append(b)
    return Graph(graph.name, graph.nodes, tuple(buffers), graph.edges, graph.meta)


def alias_pairs(source_code: str) -> list[tuple[str, str]]:
    """``(alias, base)`` pairs of the wrapper's ``alias = reinterpret_tensor(base, ...)  #
    alias`` lines: the alias is a slice of the base's block and allocates nothing."""
    return [(m[1], m[2]) for line in source_code.splitlines() if (m := _ALIAS.match(line))]


def fold_alias(graph: Graph, pairs: Sequence[tuple[str, str]], order: Sequence[str]) -> Graph:
    """The graph with each alias folded into its base: the alias is 0 bytes; the base is
    allocated by whichever of its own and its aliases' producers runs first in ``order``
    and is held to the last reader of any of them."""
    by_id = {b.id: b for b in graph.buffers}
    position = {n: i for i, n in enumerate(order)}
    members: dict[str, list[Buffer]] = {}
    for alias, base in pairs:
        if alias in by_id and base in by_id and alias != base:
            members.setdefault(base, []).append(by_id[alias])
    folded = {a.id for group in members.values() for a in group}
    buffers = []
    for b in graph.buffers:
        if b.id in folded:
            buffers.append(Buffer(b.id, 0, b.producer, b.consumers, False))
            continue
        if b.id not in members:
            buffers.append(b)
            continue
        parts = [b, *members[b.id]]
        producers = [p.producer for p in parts if p.producer is not None]
        producer = min(producers, key=position.__getitem__) if producers else None
        if b.producer is None:  # a graph input's block exists from the start
            producer = None
        readers = [c for p in parts for c in (*p.consumers, p.producer) if c is not None]
        consumers = tuple(c for c in dict.fromkeys(readers) if c != producer)
        pinned = any(p.pinned for p in parts)
        buffers.append(Buffer(b.id, b.size_bytes, producer, consumers, pinned))
    return Graph(graph.name, graph.nodes, tuple(buffers), graph.edges, graph.meta)


def node_kinds(graph: Graph) -> dict[str, str]:
    """Each node's code path (``meta.kernel``; graphs captured before it was recorded:
    ``extern`` for Inductor's ``Extern*`` node types, else ``generated``)."""
    return {
        n.id: str(
            n.meta.get(KERNEL_META_KEY) or ("extern" if n.op.startswith("Extern") else "generated")
        )
        for n in graph.nodes
    }


def kernel_groups(order: Sequence[str], kinds: Mapping[str, str]) -> list[tuple[str, ...]]:
    """The C++ backend's kernel groups of ``order``: maximal runs of nodes between extern
    and template nodes (each of which is a group of its own).

    >>> kernel_groups(["a", "b", "x", "c"], {"x": "extern"})
    [('a', 'b'), ('x',), ('c',)]
    """
    groups: list[tuple[str, ...]] = []
    run: list[str] = []
    for node in order:
        if kinds.get(node, "generated") in _FLUSHING:
            if run:
                groups.append(tuple(run))
            groups.append((node,))
            run = []
        else:
            run.append(node)
    if run:
        groups.append(tuple(run))
    return groups


def fold_kernel_groups(graph: Graph, groups: Sequence[Sequence[str]]) -> Graph:
    """The graph with each group run as one kernel: every buffer a group's node produces
    is allocated at the group's first node, every buffer a group's node reads (or produces
    and nobody reads) is held to the group's last node. Only valid for the order the groups
    were taken from."""
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for group in groups:
        for node in group:
            first[node], last[node] = group[0], group[-1]
    buffers = []
    for b in graph.buffers:
        producer = first.get(b.producer, b.producer) if b.producer is not None else None
        held = [last.get(c, c) for c in b.consumers]
        if b.producer is not None and not b.consumers:
            held.append(last.get(b.producer, b.producer))
        consumers = tuple(c for c in dict.fromkeys((*b.consumers, *held)) if c != producer)
        if producer == b.producer and consumers == b.consumers:
            buffers.append(b)
        else:
            buffers.append(Buffer(b.id, b.size_bytes, producer, consumers, b.pinned))
    return Graph(graph.name, graph.nodes, tuple(buffers), graph.edges, graph.meta)


def kernel_call_count(source_code: str) -> int:
    """How many times the wrapper calls one of its generated C++ kernels."""
    names = set(_KERNEL_DEF.findall(source_code))
    body = source_code.partition("def call(")[2]
    return sum(1 for line in body.splitlines() if (m := _CALL_LINE.match(line)) and m[1] in names)


def groups_match_source(
    groups: Sequence[Sequence[str]], kinds: Mapping[str, str], source_code: str
) -> bool:
    """Whether the groups' count of generated kernels is the wrapper's count of kernel
    calls (a mismatch: the backend flushed where the graph cannot tell, e.g. past 500
    kernel arguments)."""
    emitting = sum(1 for g in groups if any(kinds.get(n, "generated") == "generated" for n in g))
    return emitting == kernel_call_count(source_code)


@dataclass(frozen=True, slots=True)
class WrapperPlan:
    """What one compile's wrapper decided for ``order``: reuse and alias lines, the kernel
    groups (None when they could not be matched to the code; empty when every node frees
    after itself, as on GPU) and the scheduler buffers codegen removed (never allocated:
    kernel-local temporaries, dead outputs of a fused kernel)."""

    order: tuple[str, ...]
    reuse: tuple[tuple[str, str], ...]
    aliases: tuple[tuple[str, str], ...]
    groups: tuple[tuple[str, ...], ...] | None
    removed: tuple[str, ...] = ()


def wrapper_plan(
    source_code: str,
    order: Sequence[str],
    kinds: Mapping[str, str],
    device: str,
    removed: Sequence[str] = (),
) -> WrapperPlan:
    """Read the plan of the wrapper ``source_code`` that runs ``order`` on ``device``
    (``removed``: the compile's removed buffers, which the code simply never names)."""
    groups: tuple[tuple[str, ...], ...] | None = ()
    if device == "cpu":
        found = kernel_groups(order, kinds)
        groups = tuple(found) if groups_match_source(found, kinds, source_code) else None
    return WrapperPlan(
        tuple(order),
        tuple(reuse_pairs(source_code)),
        tuple(alias_pairs(source_code)),
        groups,
        tuple(sorted(removed)),
    )


def fold_removed(graph: Graph, removed: Sequence[str]) -> Graph:
    """The graph with the buffers codegen removed at 0 bytes (they are never allocated)."""
    gone = set(removed)
    if not gone:
        return graph
    buffers = tuple(
        Buffer(b.id, 0, b.producer, b.consumers, b.pinned) if b.id in gone else b
        for b in graph.buffers
    )
    return Graph(graph.name, graph.nodes, buffers, graph.edges, graph.meta)


def fold_compiled(graph: Graph, plan: WrapperPlan) -> Graph:
    """Every wrapper term folded in: aliases and reuse first (they decide which block a
    buffer is), then the kernel groups (they decide when each block is allocated and
    freed). Only valid for ``plan.order``."""
    folded = fold_removed(graph, plan.removed)
    folded = fold_reuse(fold_alias(folded, plan.aliases, plan.order), plan.reuse)
    return fold_kernel_groups(folded, plan.groups) if plan.groups else folded
