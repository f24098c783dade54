"""Run an FX graph in a chosen node order and measure its real peak memory.

The order is imposed by moving FX nodes (views and ``getitem``s follow the
operation they depend on) and regenerating the code with the boxed calling
convention, so the generated ``x = None`` frees release every value after its
last use, graph inputs included. The inputs are cloned *inside* the tracked
region, which makes the measured peak comparable to the graph/1 prediction
term for term: inputs the caller keeps are held in a side list (pinned), the
others live only in the boxed argument list and die at their last reader.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import fx
from torch.fx.graph import _BoxedCodeGen

from hw.memory.errors import VerifyError
from hw.memory.fx_graph import FxLayout
from hw.memory.tracker import MemoryPeak, PeakTracker

__all__ = [
    "boxed_module",
    "marked_module",
    "measure_workspace",
    "outputs_equal",
    "reordered_module",
    "run_measured",
    "run_timeline",
    "seeded_rng",
    "single_thread",
    "step_maxima",
]


def reordered_module(gm: fx.GraphModule, order: Sequence[str]) -> fx.GraphModule:
    """A copy of ``gm`` whose operations run in ``order`` (graph/1 node ids = FX names)."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    new = fx.GraphModule(gm, graph)
    lay = FxLayout(new)
    by_name = {n.name: n for n in new.graph.nodes}
    compute = {n.name for n in lay.compute}
    if set(order) != compute or len(order) != len(compute):
        raise VerifyError("the order does not name exactly the captured graph's operations")
    emitted: set[fx.Node] = set()
    seq: list[fx.Node] = []

    def emit(node: fx.Node) -> None:
        stack = [node]
        while stack:
            n = stack[-1]
            if n in emitted or n.op in ("placeholder", "output"):
                stack.pop()
                continue
            missing = [i for i in n.all_input_nodes if i not in emitted and i.op != "placeholder"]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            emitted.add(n)
            seq.append(n)
            # getitems right after their producer (a tuple keeps every element alive),
            # dead views right after their base (a late one would extend its base's life)
            for user in n.users:
                if (
                    user in lay.passthrough
                    and user not in emitted
                    and (
                        user.op == "call_function"
                        and (user.target.__name__ == "getitem" or not user.users)
                        and all(i in emitted or i.op == "placeholder" for i in user.all_input_nodes)
                    )
                ):
                    emitted.add(user)
                    seq.append(user)

    for nid in order:
        emit(by_name[nid])
    for n in new.graph.nodes:
        emit(n)
    output = next(iter(new.graph.find_nodes(op="output")))
    for n in seq:
        output.prepend(n)
    new.graph.lint()
    new.graph.set_codegen(_BoxedCodeGen())
    new.recompile()
    return new


def boxed_module(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` in its own order, boxed (inputs freed after their last reader)."""
    lay = FxLayout(gm)
    return reordered_module(gm, [n.name for n in lay.compute])


def _clone(a: Any) -> Any:
    return a.detach().clone() if isinstance(a, torch.Tensor) else a


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread while measuring: results reproducible to the bit (see
    :func:`run_measured`) and op-internal temporaries (per-thread scratch of oneDNN
    convolutions) the same in the workspace measurement as in the measured run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def seeded_rng(device: str, seed: int = 0) -> Iterator[None]:
    """The global generator(s) seeded with ``seed`` inside, the caller's state restored after:
    graphs with random ops (dropout) draw the same numbers in every run compared."""
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def run_measured(
    fn: Callable[[list[Any]], Any],
    args: Sequence[Any],
    pinned: Sequence[bool],
    device: str = "cpu",
    *,
    warmup: int = 1,
) -> tuple[Any, MemoryPeak]:
    """Call boxed ``fn`` on fresh copies of ``args`` and track the peak, copies included.

    Runs on one CPU thread: Inductor's parallel scatter-adds (embedding backward)
    accumulate in thread-timing order, which would make two runs of one order
    differ in the last bits; the allocations do not depend on the thread count.
    The measured run starts from a seeded generator, so random ops draw the same
    numbers in every order's run (their relative order is kept by graph/1 edges).
    """
    with single_thread(), torch.no_grad():
        for _ in range(warmup):
            fn([_clone(a) for a in args])
        with seeded_rng(device), PeakTracker(device) as tracker:
            box = [_clone(a) for a in args]
            keep = [b for b, p in zip(box, pinned, strict=True) if p]
            result = fn(box)
            del keep
    return result, tracker.result


def outputs_equal(a: Any, b: Any) -> bool:
    """Bit-identical outputs (tensors compared with ``torch.equal``, NaN-aware)."""
    la = a if isinstance(a, (list, tuple)) else [a]
    lb = b if isinstance(b, (list, tuple)) else [b]
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if x.is_floating_point():
                if not torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)):
                    return False
                if not torch.equal(x.isnan(), y.isnan()):
                    return False
            elif not torch.equal(x, y):
                return False
        elif x is not y and x != y:
            return False
    return True


def measure_workspace(gm: fx.GraphModule, args: Sequence[Any]) -> dict[str, int]:
    """Per operation, the bytes it allocates only while it runs (op-internal temporaries).

    Each operation runs inside a ``record_function`` scope; replaying the
    allocations under that scope gives its transient peak; minus what it leaves
    allocated (its outputs) that is the graph/1 ``workspace_bytes``, so the
    prediction sees e.g. scalars wrapped into tensors and im2col buffers.
    """
    from torch._C._profiler import _EventType

    from hw.memory.tracker import _quiet_profiler, replay_allocations

    lay = FxLayout(gm)
    names = {n.name for n in lay.compute}
    placeholders = iter(args)
    with single_thread(), torch.no_grad():
        for _ in range(2):  # the first pass warms op-level caches
            env: dict[fx.Node, Any] = {}
            with _quiet_profiler():
                prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
                )
                with prof:
                    placeholders = iter(args)
                    for node in gm.graph.nodes:
                        if node.op == "placeholder":
                            env[node] = _clone(next(placeholders))
                        elif node.op == "get_attr":
                            env[node] = getattr(gm, str(node.target))
                        elif node.op == "call_function":
                            a = fx.node.map_arg(node.args, env.__getitem__)
                            k = fx.node.map_arg(node.kwargs, env.__getitem__)
                            if node.name in names:
                                with torch.profiler.record_function(f"__ws__{node.name}"):
                                    env[node] = node.target(*a, **k)
                            else:
                                env[node] = node.target(*a, **k)
            del env
    out: dict[str, int] = {}
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        if ev.name.startswith("__ws__") and ev.name[6:] in names:
            events = []
            inner = list(ev.children)
            while inner:
                e = inner.pop()
                inner.extend(e.children)
                if e.tag == _EventType.Allocation and str(e.extra_fields.device) == "cpu":
                    f = e.extra_fields
                    events.append((e.start_time_ns, int(f.ptr), int(f.alloc_size)))
            peak, end, _ = replay_allocations(events)
            if peak > end:
                out[ev.name[6:]] = peak - max(end, 0)
        else:
            stack.extend(ev.children)
    return out


_STEP = "__step__"


def _step_begin(index: int) -> torch.autograd.profiler.record_function:
    scope = torch.autograd.profiler.record_function(f"{_STEP}{index}")
    scope.__enter__()
    return scope


def _step_end(scope: torch.autograd.profiler.record_function) -> None:
    scope.__exit__(None, None, None)


def marked_module(module: fx.GraphModule, order: Sequence[str]) -> fx.GraphModule:
    """A copy of reordered ``module`` in which operation ``order[t]`` runs in a profiler scope
    ``__step__<t>``; the markers allocate nothing, so the run's allocations are unchanged."""
    new = fx.GraphModule(module, copy.deepcopy(module.graph))
    by_name = {n.name: n for n in new.graph.nodes}
    for t, name in enumerate(order):
        node = by_name[name]
        with new.graph.inserting_before(node):
            scope = new.graph.call_function(_step_begin, (t,))
        with new.graph.inserting_after(node):
            new.graph.call_function(_step_end, (scope,))
    new.graph.lint()
    new.recompile()
    return new


def step_maxima(
    events: list[tuple[int, int, int]], scopes: list[tuple[int, int, int]], n_steps: int
) -> tuple[list[int], int]:
    """Replay ``(time_ns, ptr, signed_size)`` allocation events against step scopes
    ``(start_ns, end_ns, step)``; return the highest live total inside each step (the live
    total at its start included) and the overall peak, both above the replay's start.

    At equal times frees and allocations come before a scope opens and before it closes:
    what happens at a scope's first instant belongs to it, and only frees follow an
    operation before the next one starts.
    """
    marks: list[tuple[int, int, int, int]] = []  # (time, rank, a, b)
    for t, ptr, size in events:
        marks.append((t, 1, ptr, size))
    for start, end, step in scopes:
        marks.append((start, 0, step, 1))
        marks.append((end, 2, step, 0))
    marks.sort(key=lambda m: (m[0], m[1]))
    live: dict[int, int] = {}
    current = peak = 0
    out = [-1] * n_steps
    open_steps: set[int] = set()
    for _time, rank, a, b in marks:
        if rank == 1:
            ptr, size = a, b
            if size > 0:
                if ptr in live:
                    current -= live.pop(ptr)
                live[ptr] = size
                current += size
                peak = max(peak, current)
            elif size < 0 and ptr in live:
                current -= live.pop(ptr)
            for s in open_steps:
                out[s] = max(out[s], current)
        elif rank == 0:
            open_steps.add(a)
            out[a] = max(out[a], current)
        else:
            open_steps.discard(a)
    missing = [t for t, v in enumerate(out) if v < 0]
    if missing:
        raise VerifyError(f"the profiler saw no scope of step {missing[0]}: cannot time it")
    return out, peak


def run_timeline(
    module: fx.GraphModule,
    order: Sequence[str],
    args: Sequence[Any],
    pinned: Sequence[bool],
    *,
    warmup: int = 1,
) -> tuple[list[int], int]:
    """Measured memory of every step of ``order`` on CPU: ``(per-step maxima, peak)``.

    Runs ``module`` (from :func:`reordered_module`) with a profiler scope around each
    operation, exactly as :func:`run_measured` runs it (inputs cloned inside the tracked
    region, one thread), and replays the allocation events by pointer: the value of step
    ``t`` is the highest live total while ``order[t]`` runs, the graph/1 memory at step ``t``.
    """
    from hw.memory.tracker import _allocation_events, _quiet_profiler

    marked = marked_module(module, order)
    with single_thread(), torch.no_grad():
        for _ in range(warmup):
            marked([_clone(a) for a in args])
        with _quiet_profiler():
            prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            with prof:
                box = [_clone(a) for a in args]
                keep = [b for b, p in zip(box, pinned, strict=True) if p]
                result = marked(box)
                del keep, result
    scopes: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        stack.extend(ev.children)
        if ev.name.startswith(_STEP):
            scopes.append((ev.start_time_ns, ev.end_time_ns, int(ev.name[len(_STEP) :])))
    return step_maxima(_allocation_events(prof, "cpu"), scopes, len(order))
