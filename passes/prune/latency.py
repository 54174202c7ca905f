"""Latency of a plan, from onnxruntime's own per-node profile of the model on this machine.

MACs do not say where onnxruntime spends its time: profiled at 1 thread on EfficientNet-Lite0, a 1x1
projection conv costs ~9 ps per MAC, a depthwise conv 50-60 and the classifier Gemm (memory-bound) 120.
Like NetAdapt's per-layer latency tables, the cost here is measured: the model is profiled once with the
optimizations deployment uses, each profiled kernel is mapped back to the original node(s) it runs
(onnxruntime names fused and NCHWc kernels after their output tensor), and its time is scaled by the kept
fractions of that node's channel spaces. Kernels that map to no node, and the time between kernels, are a
constant. Measured against timed pruned models: within 0.03 of the measured ratio (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile

import onnx

from onnxslim.channels import Analysis
from onnxslim.errors import SlimError
from onnxslim import ondisk
from onnxslim.graph import fits_protobuf
from onnxslim.ops import compute_kernels, compute_ops

from .allocate import PlanCost, node_spaces
from onnxslim.runtime import first_line as _first_line, median_latency, session
from onnxslim.inputs import random_feeds

# onnxruntime kernels that contract channels (their time scales with the exit spaces too)
# the op kinds whose kernel time is mapped back to channels, and the kernel names (fused, NCHWc) their work
# appears under in the profile: from the op registry
MAC_OPS = compute_ops()
MAC_KERNELS = compute_kernels()
_SUFFIXES = ("_nchwc", "_kernel_time")
_WALK = 4  # nodes an onnxruntime fusion reaches above the tensor it is named after (Conv -> BN -> Add -> Clip)


def profile(model: onnx.ModelProto, feed: dict, *, threads: int | None = None, runs: int = 30,
            warmup: int = 5) -> tuple[dict[str, tuple[str, float]], float, dict[str, list[str]]]:
    """({profiled kernel name: (its op, median seconds per run)}, median wall seconds per run, {kernel name:
    its output tensors in the graph onnxruntime runs}: fused kernels such as BiasGelu or SkipLayerNormalization
    have names of their own, but their outputs keep the original tensors' names)."""

    with tempfile.TemporaryDirectory(prefix="onnxslim-profile-") as tmp:
        # the optimized graph is only for naming; past 2 GB it cannot be saved inline, and names must do
        # (weights on disk would be written inline: onnxslim.ondisk)
        optimized = os.path.join(tmp, "optimized.onnx") if fits_protobuf(model) and not ondisk.lazy_tensors(model) else None
        sess = session(model, threads=threads, profile_prefix=os.path.join(tmp, "run"), optimized_path=optimized)
        try:
            for _ in range(warmup + runs):
                sess.run(None, feed)
        except Exception as err:
            raise SlimError(f"onnxruntime failed to run the model for its latency profile: {_first_line(err)}") from None
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
        outputs = {}
        if optimized and os.path.exists(optimized):
            try:
                graph = onnx.load(optimized, load_external_data=False).graph
                outputs = {n.name: list(n.output) for n in graph.node if n.name}
            except Exception:  # naming help only: the kernels' own names still map most of them
                outputs = {}
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            durations.setdefault(name, []).append(event["dur"] * 1e-6)
            ops[name] = event.get("args", {}).get("op_name", "")
    times = {name: (ops[name], statistics.median(d[warmup:] or d)) for name, d in durations.items()}
    wall = median_latency(session(model, threads=threads), feed, runs=runs, warmup=warmup, budget_s=5.0)
    return times, wall, outputs


class LatencyModel(PlanCost):
    """Seconds per run of a plan (see the module docstring). `mapped_fraction`: the share of the profiled
    kernel time that maps to a node of the model (the rest is constant)."""

    name, label = "latency", "latency"

    def __init__(self, analysis: Analysis, times: dict[str, tuple[str, float]], wall: float, threads: int | None = None,
                 outputs: dict[str, list[str]] | None = None):
        by_tensor, exits = node_spaces(analysis)
        graph_nodes = {n.name: n for n in analysis.graph.nodes}
        producer = {t.name: n for n in analysis.graph.nodes for t in n.outputs}
        terms, unmapped = [], 0.0
        for name, (op, seconds) in times.items():
            spaces = _kernel_spaces(name, op, graph_nodes, producer, by_tensor, exits, (outputs or {}).get(name, ()))
            if spaces is None:
                unmapped += seconds
            else:
                terms.append((seconds, _one_per_group(analysis, spaces)))
        kernels = sum(seconds for _, seconds in times.values())
        # time between kernels (scheduling, memory allocation) does not shrink with channels
        super().__init__(analysis, terms, unmapped + max(0.0, wall - kernels))
        self.wall = wall
        self.threads = threads
        self.mapped_fraction = (kernels - unmapped) / kernels if kernels else 0.0

    def describe(self, plan: dict) -> dict:
        return {"estimated_fraction": round(self.fraction(plan), 4), "profiled_ms": round(self.wall * 1e3, 3),
                "mapped_fraction": round(self.mapped_fraction, 4), "kernels": len(self.terms), "threads": self.threads}


def measured_latency_model(model: onnx.ModelProto, analysis: Analysis, input_shapes: dict | None = None, *,
                           threads: int | None = 1) -> LatencyModel:
    """Profile `model` at batch 1 (random inputs: the time of these kernels does not depend on values)."""

    times, wall, outputs = profile(model, random_feeds(model, input_shapes)[0], threads=threads)
    return LatencyModel(analysis, times, wall, threads, outputs)


def _strip(name: str) -> str:
    for suffix in _SUFFIXES:
        while name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _kernel_spaces(name: str, op: str, nodes: dict, producer: dict, by_tensor: dict, exits: dict, outputs=()):
    """The channel spaces a profiled kernel's time scales with, or None when it maps to no node: by the
    kernel's name (a node, or the tensor a fused kernel is named after), else by its first output tensor
    that is a tensor of the original graph."""
    key = _strip(name)
    if key in nodes:
        node = nodes[key]
        tensors = [t.name for t in node.outputs]
    elif key in producer:
        node = producer[key]
        tensors = [key]
    else:
        found = next((_strip(t) for t in outputs if _strip(t) in producer), None)
        if found is None:
            return None
        node, tensors = producer[found], [found]
    spaces = [s for t in tensors for s in by_tensor.get(t, [])]
    compute = node if node.op in MAC_OPS else (_fused_compute(node, producer) if op in MAC_KERNELS else None)
    if compute is not None:
        spaces += exits.get(compute.name, [])
    return spaces


def _fused_compute(node, producer: dict):
    """The Conv/Gemm/MatMul a fused kernel named after `node`'s output starts from: up through the nodes
    onnxruntime folds into it (activations, BN, a residual Add)."""
    current = node
    for _ in range(_WALK):
        inputs = [producer[t.name] for t in current.inputs if t.name in producer]
        for p in inputs:
            if p.op in MAC_OPS:
                return p
        if len(inputs) != 1:
            return None
        current = inputs[0]
    return None


def _one_per_group(analysis: Analysis, spaces: list) -> list:
    """A kernel's output and its fused activation's output are the same channels: each group's activation
    spaces count once (exit spaces are the contracted inputs, a factor of their own)."""
    seen, out = set(), []
    for s in spaces:
        if not s.is_constant:
            gid = analysis.group_of(s).id
            if gid in seen:
                continue
            seen.add(gid)
        out.append(s)
    return out
