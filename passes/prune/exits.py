"""Exit layers (the consumers that contract a group's channels away) as linear maps Y = X W^T + b.

Data-driven importance and repair both see an exit as a matrix `w2` [outputs, features] applied to feature
rows: a group=1 Conv is its im2col (feature = input channel x kernel position), a Gemm or MatMul its input
features. `rows(x, y, rng)` turns the exit's input and output activations of one batch into matching
(X, Y) rows, sampling output positions so memory stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim import linear
from onnxslim.channels import EXIT, SOURCE, Analysis, Group

_ONNX_OP = {"conv": "Conv", "gemm": "Gemm", "matmul": "MatMul"}
MAX_FEATURES = 4608  # wider im2col exits would need Grams over 170 MB; they are left unrepaired


@dataclass(eq=False)
class Exit:
    node: str
    op: str  # "conv" | "gemm" | "matmul"
    group: Group  # the pruned-channel group this exit contracts
    source_space: int | None  # space id of the weight's output axis, when that axis is itself a group member
    input: str
    output: str
    w2: np.ndarray  # [outputs, features] float64, the original weights
    bias: np.ndarray | None  # [outputs] or None (MatMul has no bias)
    weight_shape: tuple
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilations: tuple = (1, 1)
    trans_b: bool = False
    feature_class: np.ndarray | None = None  # class of `group` per feature
    # (sum, skip) when the exit's output only feeds a residual Add `sum = output + skip`: the repair then
    # fits the output to original(sum) - current(skip), so the branch also absorbs the skip path's drift
    residual: tuple[str, str] | None = None
    residual_offset: np.ndarray | None = None  # a constant bias Add between the exit and the residual Add
    skip_upstream: frozenset = frozenset()  # exits the skip depends on (see _mark_skip_upstream)
    # a MatMul's bias lives in the Add after it: (that Add node, the constant's input index); the repair
    # then fits it as the intercept (bias compensation: a removed head's V bias passes the softmax as a
    # constant, which only the intercept can take over), `output` is the Add's output
    bias_add: tuple[str, int] | None = None

    @property
    def n_features(self) -> int:
        return self.w2.shape[1]

    @property
    def has_bias(self) -> bool:
        return self.op != "matmul" or self.bias_add is not None

    def features_of(self, keep_classes: np.ndarray) -> np.ndarray:
        """Feature indices kept by a bool mask over the group's classes."""
        return np.flatnonzero(keep_classes[self.feature_class])

    def kept(self, plan: dict) -> np.ndarray:
        """Feature indices a keep plan keeps (all when it leaves the exit's group whole)."""
        mask = plan.get(self.group.id)
        return np.arange(self.n_features) if mask is None else self.features_of(mask)

    def to_weight(self, w2: np.ndarray, shape: tuple | None = None) -> np.ndarray:
        """The ONNX layout of a [outputs, features] matrix (of the weight's shape unless `shape` is given)."""
        return linear.stored(_ONNX_OP[self.op], w2, shape or self.weight_shape, {"transB": int(self.trans_b)})

    def rows(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, per_sample: int) -> tuple[np.ndarray, np.ndarray]:
        """(X [rows, features], Y [rows, outputs]) in float32 at up to `per_sample` output positions per sample."""
        where = self.sample(x.shape, y.shape, rng, per_sample)
        return self.take_x(x, where), self.take_y(y, where).astype(np.float32)

    def sample(self, x_shape: tuple, y_shape: tuple, rng: np.random.Generator, per_sample: int) -> tuple:
        """The output positions rows() takes, drawn from `rng`. The draws depend on the shapes only, so the
        positions of a fixed set of batches can be drawn once and reused (stats_cache.py)."""
        if self.op == "conv":
            b, ow = x_shape[0], y_shape[3]
            n = y_shape[2] * ow
            if n > per_sample:
                flat = np.stack([rng.choice(n, per_sample, replace=False) for _ in range(b)])
            else:
                flat = np.tile(np.arange(n), (b, 1))
            pos = flat.reshape(-1)
            return np.repeat(np.arange(b), flat.shape[1]), pos // ow, pos % ow
        if self.op == "matmul":
            n = int(np.prod(x_shape[:-1]))
            if n > per_sample * x_shape[0]:
                return (rng.choice(n, per_sample * x_shape[0], replace=False),)
        return ()

    def take_x(self, x: np.ndarray, where: tuple) -> np.ndarray:
        """The feature rows of input `x` at the positions `where` (sample()), float32."""
        if self.op == "conv":
            xs = linear.conv_patches(x, self.kernel, self.strides, self.pads, self.dilations, positions=where)
            return xs.astype(np.float32)
        return self._take_flat(x, where).astype(np.float32)

    def take_y(self, y: np.ndarray, where: tuple) -> np.ndarray:
        """The output rows of `y` at the positions `where` (sample()), in y's dtype."""
        if self.op == "conv":
            bi, py, px = where
            return y[bi, :, py, px]
        return self._take_flat(y, where)

    def _take_flat(self, a: np.ndarray, where: tuple) -> np.ndarray:
        if self.op == "gemm":
            return a
        a2 = a.reshape(-1, a.shape[-1])
        return a2[where[0]] if where else a2


def _conv_exit(node: gs.Node) -> dict | None:
    attrs = node.attrs
    w = node.inputs[1].values
    if int(attrs.get("group", 1)) != 1 or w.ndim != 4 or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    pads = (pads[0], pads[1], pads[2], pads[3])  # onnx order: top, left, bottom, right
    bias = node.inputs[2].values if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) else None
    if len(node.inputs) > 2 and node.inputs[2].name and bias is None:
        return None
    return dict(op="conv", w2=linear.matrix("Conv", w), bias=bias,
                kernel=tuple(int(k) for k in w.shape[2:]), strides=tuple(int(s) for s in attrs.get("strides", (1, 1))),
                pads=pads, dilations=tuple(int(d) for d in attrs.get("dilations", (1, 1))))


def _gemm_exit(node: gs.Node) -> dict | None:
    attrs = node.attrs
    if int(attrs.get("transA", 0)) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
        return None
    trans_b = bool(int(attrs.get("transB", 0)))
    w2 = linear.matrix("Gemm", node.inputs[1].values, attrs)
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = node.inputs[2]
        if not isinstance(c, gs.Constant) or c.values.size not in (1, w2.shape[0]):
            return None
        bias = np.broadcast_to(c.values.reshape(-1), (w2.shape[0],)).copy()
    return dict(op="gemm", w2=w2, bias=bias, trans_b=trans_b)


def _matmul_exit(node: gs.Node) -> dict | None:
    w = node.inputs[1].values
    info = dict(op="matmul", w2=linear.matrix("MatMul", w), bias=None)
    out = node.outputs[0]
    add = out.outputs[0] if len(out.outputs) == 1 else None
    if add is not None and add.op == "Add" and len(add.inputs) == 2 and len(add.outputs) == 1:
        index = 1 if add.inputs[0] is out else 0
        const = add.inputs[index]
        if isinstance(const, gs.Constant) and const.values.shape == (w.shape[1],) and const.values.dtype == np.float32:
            info.update(bias=const.values.astype(np.float64), bias_add=(add.name, index), output=add.outputs[0].name)
    return info


def _residual(node: gs.Node, graph_outputs: set[str]) -> tuple[tuple[str, str] | None, np.ndarray | None]:
    """((sum, skip) tensor names, offset) when `node`'s only consumer is an Add of its output and another
    activation of the same shape (a residual connection), possibly through one Add of a constant bias
    (MatMul -> Add(bias) -> Add(skip), how transformer blocks are exported; offset = that bias);
    (None, None) otherwise."""
    out = node.outputs[0]
    found = _sole_add(out, graph_outputs)
    offset = None
    if found is not None and isinstance(found[1], gs.Constant):  # the bias Add: step over it
        bias = np.asarray(found[1].values, dtype=np.float64)
        out = found[0].outputs[0]
        offset = bias
        found = _sole_add(out, graph_outputs) if bias.ndim <= 1 else None
    if found is None:
        return None, None
    add, skip = found
    if skip is out or isinstance(skip, gs.Constant) or not _same_shape(out.shape, skip.shape):
        return None, None
    return (add.outputs[0].name, skip.name), offset


def _sole_add(tensor, graph_outputs: set[str]):
    """(the two-input Add that is `tensor`'s only consumer, its other input), or None."""
    if len(tensor.outputs) != 1 or tensor.name in graph_outputs:
        return None
    add = tensor.outputs[0]
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    return add, add.inputs[1] if add.inputs[0] is tensor else add.inputs[0]


def _same_shape(a, b) -> bool:
    """Shapes of a residual Add's inputs are the same as far as inference knows: equal ranks, equal known
    dims, and no size-1 dim of the branch broadcast against a larger or unknown one. Symbolic dims (batch,
    sequence length) may carry different names for the same size."""
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, int) and isinstance(y, int):
            if x != y:
                return False
        elif x == 1 or y == 1:
            return False
    return isinstance(a[-1], int) or isinstance(a[1] if len(a) > 1 else None, int)


def find_exits(analysis: Analysis, groups: list[Group]) -> tuple[list[Exit], list[dict]]:
    """The exits of `groups` that repair and data importance can model, in topological order, and the
    ones they cannot (with the reason)."""
    nodes = {n.name: n for n in analysis.graph.nodes}
    order = {n.name: i for i, n in enumerate(analysis.graph.nodes)}
    graph_outputs = {t.name for t in analysis.graph.outputs}
    found, skipped = [], []
    for group in groups:
        for space in group.members(EXIT):
            node = nodes[space.node]
            maker = {"Conv": _conv_exit, "Gemm": _gemm_exit, "MatMul": _matmul_exit}.get(node.op)
            info = maker(node) if maker else None
            if info is None:
                skipped.append({"node": node.name, "op": node.op, "reason": "only group=1 Conv, plain Gemm and MatMul exits are modelled"})
                continue
            if info["w2"].shape[1] > MAX_FEATURES:
                skipped.append({"node": node.name, "op": node.op, "reason": f"{info['w2'].shape[1]} input features (> {MAX_FEATURES})"})
                continue
            per_channel = group.class_of[space.id]
            reps = linear.features_per_channel(node.op, node.inputs[1].values.shape)
            feature_class = np.repeat(per_channel, reps)
            source = next((s.id for s in analysis.spaces if s.node == node.name and s.input_index == 1 and s.role == SOURCE), None)
            # with the bias Add inside the exit, the residual Add is found after it (and no offset is left)
            last = nodes[info["bias_add"][0]] if info.get("bias_add") else node
            info.setdefault("output", node.outputs[0].name)
            found.append(Exit(node=node.name, group=group, source_space=source,
                              input=node.inputs[0].name,
                              weight_shape=tuple(node.inputs[1].values.shape), feature_class=feature_class,
                              **dict(zip(("residual", "residual_offset"), _residual(last, graph_outputs))), **info))
    found.sort(key=lambda e: order[e.node])
    _mark_skip_upstream(found, analysis.graph)
    return found, skipped


def _mark_skip_upstream(exits: list[Exit], graph: gs.Graph) -> None:
    """For each residual exit, the exits its skip tensor depends on. Refitting one of them together with this
    exit (from the same statistics) would correct the same drift twice: once upstream, once in the branch."""
    producer = {t.name: n for n in graph.nodes for t in n.outputs}
    by_node = {e.node for e in exits}
    for e in exits:
        if e.residual is None:
            continue
        seen, todo, found = set(), [e.residual[1]], set()
        while todo:
            node = producer.get(todo.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.name in by_node:
                found.add(node.name)
            todo.extend(t.name for t in node.inputs if not isinstance(t, gs.Constant))
        e.skip_upstream = frozenset(found)
