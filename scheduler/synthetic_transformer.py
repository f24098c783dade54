"""A synthetic pre-LN transformer's forward + backward graph, with activation checkpointing.

Models what AOTAutograd hands to Inductor for a training step: parameters as pinned
graph inputs, gradients as pinned outputs, residual connections, recomputed forward
nodes inside the backward when a layer is checkpointed, and (with ``part``) the separate
forward and backward graphs with saved activations handed across.
"""

from __future__ import annotations

import numpy as np

from scheduler.errors import SchedulerError
from scheduler.graph_arrays import GraphArrays, GraphBuilder, split_forward_backward

__all__ = ["transformer_fwbw", "transformer_layers_for_nodes"]


_NODES_PER_LAYER_FW = 10
_NODES_PER_LAYER_BW = 14
_NODES_PER_LAYER_RC = 8
_NODES_OUTSIDE = 9


def transformer_layers_for_nodes(n: int, *, checkpoint: bool = True) -> int:
    """The number of layers whose fw+bw graph has about ``n`` nodes (at least 1)."""
    per = _NODES_PER_LAYER_FW + _NODES_PER_LAYER_BW + (_NODES_PER_LAYER_RC if checkpoint else 0)
    return max(1, round((n - _NODES_OUTSIDE) / per))


def transformer_fwbw(
    n_layers: int,
    *,
    seed: int = 0,
    batch: int = 8,
    seq: int = 512,
    hidden: int = 1024,
    vocab: int = 8192,
    heads: int = 16,
    checkpoint: bool = True,
    checkpoint_every: int = 1,
    part: str = "joint",
) -> GraphArrays:
    """A pre-LN transformer's joint forward + backward graph, as AOTAutograd traces it.

    Per layer, forward: ln1, qkv, attention (scores as workspace), out-proj, residual
    add, ln2, fc1, gelu, fc2, residual add. Backward in reverse: input- and weight-grad
    matmuls, gelu/attention/layernorm backward, residual gradient sums. Parameters are
    pinned graph inputs read by forward and backward; every gradient is a pinned output;
    the loss is pinned. Activations are float32 ``batch x seq x hidden`` (x3 for qkv, x4
    for the MLP). With ``checkpoint`` every ``checkpoint_every``-th layer keeps only its
    input for backward and recomputes its forward (``L{i}.rc.*`` nodes) just before its
    backward; other layers hand their saved activations to backward. The given order is
    the framework's: forward, loss, then each layer's (recompute +) backward.

    ``part`` picks what AOTAutograd would hand to the compiler: ``"joint"`` (one graph),
    ``"forward"`` (saved activations become pinned outputs, handed to backward) or
    ``"backward"`` (they arrive as unpinned graph inputs, freed after their last use);
    see :func:`split_forward_backward`.
    ``seed`` jitters each layer's MLP width by up to +-25% so graphs differ per seed.
    """
    if n_layers < 1:
        raise SchedulerError(f"n_layers must be >= 1, got {n_layers}")
    rng = np.random.default_rng(seed)
    f32 = 4
    act = batch * seq * hidden * f32
    scores = batch * heads * seq * seq * f32
    g = GraphBuilder()
    tokens = g.buf("tokens", batch * seq * 8, -1)
    targets = g.buf("targets", batch * seq * 8, -1)
    emb = g.buf("param.embed", vocab * hidden * f32, -1, pinned=True)
    x = g.op("embed", "embedding", [tokens, emb], act)

    layers = []
    for i in range(n_layers):
        ffn = int(4 * hidden * (1 + 0.25 * (2 * rng.random() - 1)))
        mlp = batch * seq * ffn * f32
        p = {
            "g1": g.buf(f"param.L{i}.ln1", hidden * f32, -1, pinned=True),
            "wqkv": g.buf(f"param.L{i}.wqkv", 3 * hidden * hidden * f32, -1, pinned=True),
            "wo": g.buf(f"param.L{i}.wo", hidden * hidden * f32, -1, pinned=True),
            "g2": g.buf(f"param.L{i}.ln2", hidden * f32, -1, pinned=True),
            "w1": g.buf(f"param.L{i}.w1", hidden * ffn * f32, -1, pinned=True),
            "w2": g.buf(f"param.L{i}.w2", ffn * hidden * f32, -1, pinned=True),
        }

        def forward(prefix: str, x_in: int, p: dict[str, int] = p, mlp: int = mlp) -> dict:
            a: dict[str, int] = {"x": x_in}
            a["ln1"] = g.op(f"{prefix}.ln1", "layer_norm", [x_in, p["g1"]], act)
            a["qkv"] = g.op(f"{prefix}.qkv", "mm", [a["ln1"], p["wqkv"]], 3 * act)
            a["attn"] = g.op(f"{prefix}.attn", "attention", [a["qkv"]], act, workspace_bytes=scores)
            proj = g.op(f"{prefix}.proj", "mm", [a["attn"], p["wo"]], act)
            a["x1"] = g.op(f"{prefix}.add1", "add", [x_in, proj], act)
            a["ln2"] = g.op(f"{prefix}.ln2", "layer_norm", [a["x1"], p["g2"]], act)
            a["fc1"] = g.op(f"{prefix}.fc1", "mm", [a["ln2"], p["w1"]], mlp)
            a["gelu"] = g.op(f"{prefix}.gelu", "gelu", [a["fc1"]], mlp)
            return a

        a = forward(f"L{i}.fw", x)
        fc2 = g.op(f"L{i}.fw.fc2", "mm", [a["gelu"], p["w2"]], act)
        x = g.op(f"L{i}.fw.add2", "add", [a["x1"], fc2], act)
        ckpt = checkpoint and i % checkpoint_every == 0
        layers.append((i, p, a, ckpt, forward, mlp))

    lnf_g = g.buf("param.lnf", hidden * f32, -1, pinned=True)
    whead = g.buf("param.head", hidden * vocab * f32, -1, pinned=True)
    lnf = g.op("lnf", "layer_norm", [x, lnf_g], act)
    logits = g.op("head", "mm", [lnf, whead], batch * seq * vocab * f32)
    g.op("loss", "cross_entropy", [logits, targets], f32, pinned=True)

    dlogits = g.op("bw.loss", "cross_entropy_bw", [logits, targets], batch * seq * vocab * f32)
    g.op("bw.head.w", "mm_bw_weight", [dlogits, lnf], hidden * vocab * f32, pinned=True)
    dlnf = g.op("bw.head.in", "mm_bw_input", [dlogits, whead], act)
    v = g.node("bw.lnf", "layer_norm_bw", [dlnf, x, lnf_g])
    dx = g.buf("bw.lnf", act, v)
    g.buf("grad.lnf", hidden * f32, v, pinned=True)

    for i, p, a, ckpt, forward, mlp in reversed(layers):
        if ckpt:
            a = forward(f"L{i}.rc", a["x"])
        pre = f"L{i}.bw"
        g.op(
            f"{pre}.w2", "mm_bw_weight", [dx, a["gelu"]], mlp // batch // seq * hidden, pinned=True
        )
        dgelu = g.op(f"{pre}.fc2", "mm_bw_input", [dx, p["w2"]], mlp)
        dfc1 = g.op(f"{pre}.gelu", "gelu_bw", [dgelu, a["fc1"]], mlp)
        g.op(
            f"{pre}.w1", "mm_bw_weight", [dfc1, a["ln2"]], mlp // batch // seq * hidden, pinned=True
        )
        dln2 = g.op(f"{pre}.fc1", "mm_bw_input", [dfc1, p["w1"]], act)
        v = g.node(f"{pre}.ln2", "layer_norm_bw", [dln2, a["x1"], p["g2"]])
        dx1a = g.buf(f"{pre}.ln2", act, v)
        g.buf(f"grad.L{i}.ln2", hidden * f32, v, pinned=True)
        dx1 = g.op(f"{pre}.add1", "add", [dx, dx1a], act)
        g.op(f"{pre}.wo", "mm_bw_weight", [dx1, a["attn"]], hidden * hidden * f32, pinned=True)
        dattn = g.op(f"{pre}.proj", "mm_bw_input", [dx1, p["wo"]], act)
        dqkv = g.op(
            f"{pre}.attn",
            "attention_bw",
            [dattn, a["qkv"], a["attn"]],
            3 * act,
            workspace_bytes=scores,
        )
        g.op(
            f"{pre}.wqkv", "mm_bw_weight", [dqkv, a["ln1"]], 3 * hidden * hidden * f32, pinned=True
        )
        dln1 = g.op(f"{pre}.qkv", "mm_bw_input", [dqkv, p["wqkv"]], act)
        v = g.node(f"{pre}.ln1", "layer_norm_bw", [dln1, a["x"], p["g1"]])
        dxa = g.buf(f"{pre}.ln1", act, v)
        g.buf(f"grad.L{i}.ln1", hidden * f32, v, pinned=True)
        dx = g.op(f"{pre}.add0", "add", [dx1, dxa], act)
    g.op("bw.embed", "embedding_bw", [dx, tokens], vocab * hidden * f32, pinned=True)

    meta = {
        "family": "transformer_fwbw",
        "seed": seed,
        "layers": n_layers,
        "batch": batch,
        "seq": seq,
        "hidden": hidden,
        "vocab": vocab,
        "checkpoint": checkpoint,
        "checkpoint_every": checkpoint_every,
    }
    ck = "ac" if checkpoint else "noac"
    joint = g.finish(f"transformer-fwbw-{n_layers}L-{ck}-s{seed}", meta)
    if part == "joint":
        return joint
    return split_forward_backward(joint, g.names.index("bw.loss"), part)
