"""Channel dependency analysis: which channels of which tensors must be removed together.

A *space* is one axis of one tensor whose entries can be removed: an activation axis (tensor, axis), or an
axis of a constant as one node uses it (node, input index, axis) -- constants are sliced per use, so a
constant shared by several nodes never couples them. Op rules tie the positions of spaces together
(identity, offsets for Concat/Split/Slice, blocks for Flatten/Reshape, groups for grouped Conv). Positions
tied together form one *class*: the unit that is kept or removed. Spaces that share classes form a *group*.

A space is *frozen* when something cannot follow a removal: an op without a rule, a graph input or output,
an unknown shape, a normalization over that axis. Every class with a position in a frozen space is kept,
and the group carries the reason.

The rules live in the op registry (`onnxslim.ops`, one entry per op kind); this module builds spaces, runs rules to a fixed point, and
computes classes with a vectorized union-find.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .errors import SlimError
from .graph import infer_shapes, to_graph
from .ops import channel_rules
from .ops.helpers import ACTIVATION, BN_SCALE, EXIT, PARAM, SOURCE, Frozen  # noqa: F401 - the roles' public home

MAX_SPACE = 2**22  # positions of one channel axis (the widest real layers have ~250K: vocabularies)
MAX_POSITIONS = 2**24  # positions in all: ~10 int64 arrays of this length in _components, ~1.3 GB at most


@dataclass(eq=False)
class Space:
    id: int
    tensor: str  # activation tensor name, or the constant's name
    axis: int
    size: int
    offset: int  # first position in the global element numbering
    role: str = ACTIVATION
    node: str | None = None  # for constants: the node using it
    input_index: int | None = None
    op: str | None = None  # op type of `node` (constants) or of the producer (activations)

    @property
    def is_constant(self) -> bool:
        return self.role != ACTIVATION

    def describe(self) -> str:
        if self.is_constant:
            return f"{self.node}[{self.input_index}]:{self.role}@{self.axis}"
        return f"{self.tensor}@{self.axis}"


@dataclass
class Group:
    id: int
    spaces: list[Space]
    n_classes: int
    class_of: dict[int, np.ndarray]  # space id -> class index (0..n_classes-1) of every position
    frozen: np.ndarray  # bool per class
    reasons: list[str]

    @property
    def prunable(self) -> int:
        return int((~self.frozen).sum())

    @property
    def channels(self) -> int:
        """The width of the group's widest tensor axis: attention heads tie one position per head into one
        class, so a 384-wide Q projection of 12 heads has 32 classes but 384 channels."""
        return max((s.size for s in self.spaces if not s.is_constant), default=self.n_classes)

    def members(self, role: str) -> list[Space]:
        return [s for s in self.spaces if s.role == role]

    def trace(self, limit: int = 8) -> str:
        """Torch-Pruning style: sources => pass-through ops => exits."""
        def names(items):
            items = list(dict.fromkeys(items))
            return ", ".join(items[:limit]) + (f" (+{len(items) - limit})" if len(items) > limit else "")
        src = [f"{s.node}.out" for s in self.members(SOURCE)]
        mid = [f"{s.op}" for s in self.spaces if not s.is_constant and s.op]
        ext = [f"{s.node}.in" for s in self.members(EXIT)]
        return " => ".join(p for p in (names(src), names(mid), names(ext)) if p)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "channels": self.channels,
            "units": self.n_classes,
            "prunable": self.prunable,
            "frozen_reasons": self.reasons,
            "trace": self.trace(),
        }


Rewrite = Callable[..., None]  # fix(keep, node=the node to edit): keep is {space id: kept positions}


@dataclass
class Analysis:
    graph: gs.Graph
    spaces: list[Space]
    groups: list[Group]
    rewrites: list[tuple[gs.Node, Rewrite]] = field(default_factory=list)
    act_spaces: dict[tuple[str, int], Space] = field(default_factory=dict)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable > 0 and g.members(SOURCE)]

    def group_of(self, space: Space) -> Group:
        return self._group_by_space[space.id]

    def __post_init__(self):
        self._group_by_space = {s.id: g for g in self.groups for s in g.spaces}
        self.nodes = {n.name: n for n in self.graph.nodes}  # by name: spaces of constants name their node

    def report(self) -> dict:
        return {
            "groups": len(self.groups),
            "prunable_groups": len(self.prunable_groups),
            "prunable_channels": sum(g.prunable for g in self.prunable_groups),
            "frozen": [
                {"group": g.id, "channels": g.n_classes, "frozen_channels": int(g.frozen.sum()), "reasons": g.reasons, "trace": g.trace()}
                for g in self.groups if g.frozen.any()
            ],
        }


class Builder:
    """Creates spaces on demand, records ties between positions, and runs rules to a fixed point."""

    def __init__(self, graph: gs.Graph, rules: dict, exclude: set[str] = frozenset()):
        self.graph = graph
        self.rules = rules
        self.exclude = set(exclude)
        self.spaces: list[Space] = []
        self._act: dict[tuple[str, int], Space] = {}
        self._const: dict[tuple[str, int, int], Space] = {}
        self._edges_a: list[np.ndarray] = []
        self._edges_b: list[np.ndarray] = []
        self.frozen: dict[int, str] = {}
        self.rewrites: list[tuple[gs.Node, Rewrite]] = []
        self._queue: deque[Space] = deque()
        self._visited: set[tuple[str, str, int]] = set()
        self._n = 0
        self._rule_node: gs.Node | None = None
        self.producer: dict[str, gs.Node] = {t.name: node for node in graph.nodes for t in node.outputs}
        self.consumers: dict[str, list[gs.Node]] = {}
        for node in graph.nodes:
            # a tensor read inside an If/Loop/Scan body is consumed by that node: no rule, so it freezes
            for t in list(node.inputs) + _subgraph_reads(node):
                self.consumers.setdefault(t.name, [])
                if node not in self.consumers[t.name]:
                    self.consumers[t.name].append(node)
        self.graph_inputs = {t.name for t in graph.inputs}
        self.graph_outputs = {t.name for t in graph.outputs}

    # -- spaces -----------------------------------------------------------------------------------
    def _new(self, **kw) -> Space:
        # positions are numbered and linked in int64 arrays: a dim claiming billions of channels would be
        # gigabytes of union-find (issue 15); such an axis is frozen instead
        if kw["size"] > MAX_SPACE or self._n + kw["size"] > MAX_POSITIONS:
            raise Frozen(f"axis of {kw['size']} positions is beyond what the analysis takes "
                         f"({MAX_SPACE} per axis, {MAX_POSITIONS} in all)")
        space = Space(id=len(self.spaces), offset=self._n, **kw)
        self._n += space.size
        self.spaces.append(space)
        return space

    def act(self, tensor: gs.Tensor, axis: int) -> Space:
        """The space of an activation axis; raises Frozen when its size is not a known int."""
        if isinstance(tensor, gs.Constant):
            raise Frozen(f"'{tensor.name}' is a constant where an activation was expected")
        shape = tensor.shape
        if shape is None:
            raise Frozen(f"shape of '{tensor.name}' is unknown")
        axis = axis % len(shape) if len(shape) else axis
        key = (tensor.name, axis)
        if self._rule_node is not None:
            # the running rule handles this space of its node: no need to run it again from there
            self._visited.add((self._rule_node.name, tensor.name, axis))
        if key in self._act:
            return self._act[key]
        size = shape[axis] if axis < len(shape) else None
        if not isinstance(size, (int, np.integer)) or size <= 0:
            raise Frozen(f"dim {axis} of '{tensor.name}' is not static ({size})")
        producer = self.producer.get(tensor.name)
        space = self._new(tensor=tensor.name, axis=axis, size=int(size), op=producer.op if producer else None)
        self._act[key] = space
        self._queue.append(space)
        return space

    def const(self, node: gs.Node, index: int, axis: int, role: str) -> Space:
        tensor = node.inputs[index]
        if not isinstance(tensor, gs.Constant):
            raise Frozen(f"input {index} of {node.op} '{node.name}' is not a constant")
        values_shape = tensor.shape
        axis = axis % len(values_shape)
        key = (node.name, index, axis)
        if key in self._const:
            return self._const[key]
        space = self._new(tensor=tensor.name, axis=axis, size=int(values_shape[axis]), role=role,
                          node=node.name, input_index=index, op=node.op)
        self._const[key] = space
        return space

    # -- relations --------------------------------------------------------------------------------
    def link(self, a: Space, b: Space, ia=None, ib=None) -> None:
        """Tie positions ia of `a` to positions ib of `b` (identity when both are None)."""
        if ia is None and ib is None:
            if a.size != b.size:
                raise Frozen(f"size mismatch {a.describe()} ({a.size}) vs {b.describe()} ({b.size})")
            ia = ib = np.arange(a.size)
        ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
        self._edges_a.append(a.offset + ia)
        self._edges_b.append(b.offset + ib)

    def freeze(self, space: Space, reason: str) -> None:
        self.frozen.setdefault(space.id, reason)

    def on_rewrite(self, node: gs.Node, fn: Rewrite) -> None:
        self.rewrites.append((node, fn))

    # -- fixed point -------------------------------------------------------------------------------
    def seed(self) -> None:
        """Spaces start at the ops that create channels; rules discover the rest."""
        for node in self.graph.nodes:
            rule = self.rules.get(node.op)
            seeds = getattr(rule, "seeds", None)
            if seeds is None:
                continue
            for tensor, axis in seeds(node):
                try:
                    self.act(tensor, axis)
                except Frozen:
                    pass

    def run(self) -> None:
        while self._queue:
            space = self._queue.popleft()
            name = space.tensor
            if name in self.graph_inputs:
                self.freeze(space, f"graph input '{name}'")
            if name in self.graph_outputs:
                self.freeze(space, f"graph output '{name}'")
            nodes = ([self.producer[name]] if name in self.producer else []) + self.consumers.get(name, [])
            for node in nodes:
                self._apply_rule(node, space)

    def _apply_rule(self, node: gs.Node, space: Space) -> None:
        key = (node.name, space.tensor, space.axis)
        if key in self._visited:
            return
        self._visited.add(key)
        tensor = next((t for t in list(node.inputs) + list(node.outputs) if t.name == space.tensor), None)
        if node.name in self.exclude:
            self.freeze(space, f"{node.op} '{node.name}' excluded by the user")
            return
        rule = self.rules.get(node.op)
        if rule is None:
            self.freeze(space, f"{node.op} '{node.name}' has no channel rule")
            return
        self._rule_node = node
        try:
            rule(self, node, tensor, space.axis)
        except Frozen as why:
            self.freeze(space, f"{node.op} '{node.name}': {why}")
        except Exception as err:  # an odd model must never crash the analysis: freeze and say so
            self.freeze(space, f"{node.op} '{node.name}': rule failed ({type(err).__name__}: {err})")
        finally:
            self._rule_node = None

    # -- classes and groups ----------------------------------------------------------------------------
    def finish(self) -> Analysis:
        n = self._n
        if self._edges_a:
            ea, eb = np.concatenate(self._edges_a), np.concatenate(self._edges_b)
        else:
            ea = eb = np.zeros(0, dtype=np.int64)
        label = _components(n, ea, eb)
        space_of = np.repeat(np.arange(len(self.spaces)), [s.size for s in self.spaces]) if n else np.zeros(0, np.int64)
        # spaces sharing a label are in one group: each space is linked to one owner space of each of its labels
        first_space = np.full(n, -1, dtype=np.int64)
        order = np.argsort(label, kind="stable")
        sorted_labels = label[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1] if n else np.zeros(0, np.int64)
        first_space[sorted_labels[starts]] = space_of[order][starts]
        group_of = _components(len(self.spaces), space_of, first_space[label])
        members: dict[int, list[Space]] = {}
        for s in self.spaces:
            members.setdefault(int(group_of[s.id]), []).append(s)
        frozen_label = np.zeros(n, dtype=bool)
        for sid in self.frozen:
            s = self.spaces[sid]
            frozen_label[label[s.offset:s.offset + s.size]] = True
        groups = []
        for gid, spaces in enumerate(members.values()):
            labels = np.concatenate([label[s.offset:s.offset + s.size] for s in spaces])
            uniq = np.unique(labels)
            class_of = {s.id: np.searchsorted(uniq, label[s.offset:s.offset + s.size]) for s in spaces}
            reasons = list(dict.fromkeys(self.frozen[s.id] for s in spaces if s.id in self.frozen))
            groups.append(Group(gid, spaces, len(uniq), class_of, frozen_label[uniq], reasons))
        return Analysis(self.graph, self.spaces, groups, self.rewrites, dict(self._act))


def _subgraph_reads(node: gs.Node) -> list:
    """Outer-scope tensors read inside the node's subgraphs (recursively)."""
    reads = []
    for value in node.attrs.values():
        graphs = value if isinstance(value, list) else [value]
        for sub in graphs:
            if isinstance(sub, gs.Graph):
                local = {t.name for t in sub.inputs}
                for inner in sub.nodes:
                    local.update(t.name for t in inner.outputs)
                for inner in sub.nodes:
                    reads.extend(t for t in list(inner.inputs) + _subgraph_reads(inner)
                                 if t.name not in local and not isinstance(t, gs.Constant))
    return reads


def _components(n: int, ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """Connected components of n elements under edges (ea, eb): hooking on minimum plus pointer jumping."""
    parent = np.arange(n, dtype=np.int64)
    if not len(ea):
        return parent
    while True:
        ra, rb = parent[ea], parent[eb]
        if np.array_equal(ra, rb):
            return parent
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


def analyze_graph(graph: gs.Graph, exclude=()) -> Analysis:
    """Analyze a graph that went through the cleanup pass (weights are gs.Constant, shapes inferred)."""
    builder = Builder(graph, channel_rules(), set(exclude))
    builder.seed()
    builder.run()
    return builder.finish()


def analyze(model: onnx.ModelProto, exclude=()) -> Analysis:
    graph = to_graph(infer_shapes(model))
    unknown = set(exclude) - {n.name for n in graph.nodes}
    if unknown:
        raise SlimError(f"--exclude names no node of the model: {sorted(unknown)}")
    return analyze_graph(graph, exclude)
