"""A decoder-only transformer (GPT-style, pre-LayerNorm) with random weights, written with onnx's helpers.

It stands in for the large language models people shrink with int4: the tests build a tiny one in memory,
the benchmarks several sizes up to gigabytes. Large models are written with their weights in an external
data file, tensor by tensor as they are drawn, so building one needs little more memory than its largest
tensor.

    python models/build_decoder.py OUT.onnx --preset 0.5gb           # or --layers/--hidden/--heads/...
    python models/build_decoder.py OUT.onnx --layers 2 --hidden 64 --heads 4 --vocab 256

Graph: input_ids [batch, seq] -> token embedding (Gather) + learned positions -> N x (LayerNorm, fused QKV
MatMul, causal softmax attention, output MatMul, residual; LayerNorm, FFN MatMul, x*sigmoid(1.702x) (GELU's
sigmoid form), MatMul, residual) -> LayerNorm -> untied LM head MatMul -> logits [batch, seq, vocab].
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRESETS = {  # approximate float32 size in the name
    "tiny": dict(layers=2, hidden=64, heads=4, ffn=256, vocab=256, max_seq=64),
    "small": dict(layers=4, hidden=256, heads=4, ffn=1024, vocab=2048, max_seq=128),
    "0.5gb": dict(layers=9, hidden=1024, heads=16, ffn=4096, vocab=8192, max_seq=256),
    "1gb": dict(layers=19, hidden=1024, heads=16, ffn=4096, vocab=8192, max_seq=256),
    "2gb": dict(layers=38, hidden=1024, heads=16, ffn=4096, vocab=8192, max_seq=256),
    "4gb": dict(layers=20, hidden=2048, heads=16, ffn=8192, vocab=16384, max_seq=256),
}
ALIGN = 4096  # external-data offsets aligned so runtimes may memory-map them


@dataclass
class Spec:
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    ffn: int = 256
    vocab: int = 256
    max_seq: int = 64
    seed: int = 0

    def params(self) -> int:
        d, f = self.hidden, self.ffn
        per_layer = 4 * d * d + 2 * d * f + 9 * d + f
        return self.layers * per_layer + 2 * self.vocab * d + self.max_seq * d + 2 * d + self.vocab


class _Weights:
    """Draws each weight when asked and keeps it inline, or streams it to the external data file."""

    def __init__(self, spec: Spec, data_file=None, location: str = "", min_external: int = 1024):
        self.rng = np.random.default_rng(spec.seed)
        self.fh, self.location, self.min_external = data_file, location, min_external
        self.tensors: list[TensorProto] = []

    def add(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.fh is None or array.size < self.min_external:
            self.tensors.append(numpy_helper.from_array(array, name))
            return name
        self.fh.write(b"\0" * (-self.fh.tell() % ALIGN))
        offset = self.fh.tell()
        self.fh.write(array.tobytes())
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape, data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(array.nbytes))):
            t.external_data.add(key=key, value=value)
        self.tensors.append(t)
        return name

    def normal(self, name: str, shape, std: float) -> str:
        return self.add(name, self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def const(self, name: str, array) -> str:
        self.tensors.append(numpy_helper.from_array(np.asarray(array), name))
        return name


def _layer(i: int, x: str, spec: Spec, w: _Weights, nodes: list) -> str:
    d, h = spec.hidden, spec.heads
    p = f"l{i}"

    def node(op, ins, name, **kw):
        nodes.append(helper.make_node(op, ins, [f"{p}.{name}"], name=f"{p}.{name}", **kw))
        return f"{p}.{name}"

    def linear(inp, name, k, n, std):
        y = node("MatMul", [inp, w.normal(f"{p}.{name}.weight", (k, n), std)], name)
        return node("Add", [y, w.add(f"{p}.{name}.bias", np.zeros(n, np.float32))], f"{name}.bias_add")

    ln1 = node("LayerNormalization", [x, w.add(f"{p}.ln1.g", np.ones(d)), w.add(f"{p}.ln1.b", np.zeros(d))], "ln1", axis=-1)
    qkv = linear(ln1, "qkv", d, 3 * d, 0.02)
    nodes.append(helper.make_node("Split", [qkv, "c.split3"], [f"{p}.q", f"{p}.k", f"{p}.v"], name=f"{p}.split", axis=-1))
    q = node("Transpose", [node("Reshape", [f"{p}.q", "c.heads_shape"], "q4")], "qt", perm=[0, 2, 1, 3])
    k = node("Transpose", [node("Reshape", [f"{p}.k", "c.heads_shape"], "k4")], "kt", perm=[0, 2, 3, 1])
    v = node("Transpose", [node("Reshape", [f"{p}.v", "c.heads_shape"], "v4")], "vt", perm=[0, 2, 1, 3])
    scores = node("Add", [node("Mul", [node("MatMul", [q, k], "qk"), "c.scale"], "scaled"), "mask"], "masked")
    ctx = node("MatMul", [node("Softmax", [scores], "probs", axis=-1), v], "ctx")
    merged = node("Reshape", [node("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3]), "c.merge_shape"], "merged")
    x = node("Add", [x, linear(merged, "attn_out", d, d, 0.02 / np.sqrt(2 * spec.layers))], "res1")
    ln2 = node("LayerNormalization", [x, w.add(f"{p}.ln2.g", np.ones(d)), w.add(f"{p}.ln2.b", np.zeros(d))], "ln2", axis=-1)
    up = linear(ln2, "ffn_up", d, spec.ffn, 0.02)
    act = node("Mul", [up, node("Sigmoid", [node("Mul", [up, "c.gelu"], "gelu_in")], "gelu_gate")], "gelu")
    return node("Add", [x, linear(act, "ffn_down", spec.ffn, d, 0.02 / np.sqrt(2 * spec.layers))], "res2")


def build(spec: Spec, data_file=None, location: str = "") -> onnx.ModelProto:
    """The model; with `data_file` (open for writing) its large weights go there, named `location`."""
    d, h = spec.hidden, spec.heads
    w = _Weights(spec, data_file, location)
    nodes: list = []
    w.const("c.split3", np.array([d, d, d], np.int64))
    w.const("c.heads_shape", np.array([0, 0, h, d // h], np.int64))
    w.const("c.merge_shape", np.array([0, 0, d], np.int64))
    w.const("c.scale", np.array(1.0 / np.sqrt(d // h), np.float32))
    w.const("c.gelu", np.array(1.702, np.float32))
    w.const("c.zero", np.array([0], np.int64))
    w.const("c.zero2", np.array([0, 0], np.int64))
    causal = np.triu(np.full((spec.max_seq, spec.max_seq), -1e4, np.float32), k=1)
    w.add("c.causal", causal)
    nodes += [
        helper.make_node("Shape", ["input_ids"], ["seq"], name="seq_len", start=1, end=2),
        helper.make_node("Gather", [w.normal("tok_embed", (spec.vocab, d), 0.02), "input_ids"], ["tok"], name="tok_embed"),
        helper.make_node("Slice", [w.normal("pos_embed", (spec.max_seq, d), 0.01), "c.zero", "seq", "c.zero"], ["pos"], name="pos_slice"),
        helper.make_node("Add", ["tok", "pos"], ["embed"], name="embed_add"),
        helper.make_node("Concat", ["seq", "seq"], ["mask_end"], name="mask_end", axis=0),
        helper.make_node("Slice", ["c.causal", "c.zero2", "mask_end"], ["mask"], name="mask"),
    ]
    x = "embed"
    for i in range(spec.layers):
        x = _layer(i, x, spec, w, nodes)
    nodes.append(helper.make_node("LayerNormalization", [x, w.add("ln_f.g", np.ones(d)), w.add("ln_f.b", np.zeros(d))],
                                  ["ln_f"], name="ln_f", axis=-1))
    nodes.append(helper.make_node("MatMul", ["ln_f", w.normal("lm_head.weight", (d, spec.vocab), 0.02)], ["logits"], name="lm_head"))
    graph = helper.make_graph(
        nodes, "decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", spec.vocab])], w.tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxslim.build_decoder")
    model.ir_version = 8
    return model


def save(spec: Spec, path: str | os.PathLike, external: bool | None = None) -> Path:
    """Write the model to `path`; weights stream to `path.data` beside it when `external` (default: over 1 GB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external is None:
        external = spec.params() * 4 > 2**30
    if not external:
        onnx.save_model(build(spec), str(path))
        return path
    location = path.name + ".data"
    with open(path.parent / location, "wb") as fh:
        model = build(spec, fh, location)
    onnx.save_model(model, str(path))
    return path


def spec_from_args(args) -> Spec:
    base = dict(PRESETS[args.preset]) if args.preset else dict(PRESETS["tiny"])
    for key in ("layers", "hidden", "heads", "ffn", "vocab", "max_seq"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if base["hidden"] % base["heads"]:
        raise SystemExit("build_decoder: error: --hidden must be a multiple of --heads")
    return Spec(seed=args.seed, **base)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--preset", choices=sorted(PRESETS))
    for key in ("layers", "hidden", "heads", "ffn", "vocab", "max_seq"):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--external-data", dest="external", action="store_true", default=None,
                        help="weights in OUTPUT.data (default: when over 1 GB)")
    args = parser.parse_args(argv)
    spec = spec_from_args(args)
    path = save(spec, args.output, args.external)
    print(f"wrote {path}: {spec.params() / 1e6:.1f}M parameters ({spec.params() * 4 / 2**30:.2f} GiB float32), {spec}")


if __name__ == "__main__":
    main()
