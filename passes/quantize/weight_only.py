"""Weight-only blockwise quantization (`--quantize int4` / `int8-weight`) to onnxruntime's contrib kernels.

MatMul (and Gemm, rewritten exactly as MatMul + Add first) with a constant 2-D float weight becomes
`com.microsoft.MatMulNBits`, built by onnxruntime.quantization's own `MatMulNBitsQuantizer` (its default,
data-free round-to-nearest per block of `block_size` input features, symmetric or with a zero point). A large
embedding table read by a Gather becomes `GatherBlockQuantized` with uint8-packed data (onnxruntime's
quantizer would write int4 tensors and force opset 21, which breaks models whose ops changed since
their opset); that one we quantize here, per block along the embedding axis.

Weights too small to gain (their own size is below `min_elements`) stay in float and are listed; with a
tolerance, the layers whose quantization hurts the outputs most go back to float until the worst
relative output error holds (the same contract as int8's `--tolerance`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxslim import ondisk
from onnxslim.ops.macs import attrs_of

from . import fidelity
from .backend import quantizing, quiet

MS_DOMAIN = "com.microsoft"
RANKING_BATCHES = 2  # calibration batches that rank the layers for the fallback (as int8's does)


def gemms_to_matmul(model: onnx.ModelProto) -> list[str]:
    """Rewrite Gemm(A, B const[, C]) without transA as MatMul(A, alpha*B') (+ Add beta*C): the same
    numbers, and a form MatMulNBits can take. Returns the rewritten nodes' names."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes, done = [], []
    for node in model.graph.node:
        b = inits.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) > 1 else None
        c_ok = len(node.input) < 3 or not node.input[2] or node.input[2] in inits
        attrs = attrs_of(node)
        if b is None or attrs.get("transA", 0) or not c_ok or b.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        w = ondisk.to_array(b)
        w = (w.T if attrs.get("transB", 0) else w) * np.float32(attrs.get("alpha", 1.0))
        wname = _add(model, inits, f"{node.name or node.output[0]}.weight_kn", np.ascontiguousarray(w, np.float32))
        has_c = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + ".matmul" if has_c else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name))
        if has_c:
            c = ondisk.to_array(inits[node.input[2]]) * np.float32(attrs.get("beta", 1.0))
            cname = _add(model, inits, f"{node.name or node.output[0]}.bias", c.astype(np.float32))
            nodes.append(helper.make_node("Add", [mm_out, cname], [node.output[0]], name=f"{node.name}.bias_add"))
        done.append(node.name)
    if done:
        model.graph.ClearField("node")
        model.graph.node.extend(nodes)
        _drop_unused_initializers(model)
    return done


def _add(model: onnx.ModelProto, inits: dict, base: str, array: np.ndarray) -> str:
    """A new initializer holding `array`, named `base` (or `base.1`, `base.2`... when taken); its name."""
    name, k = base, 1
    while name in inits:
        name, k = f"{base}.{k}", k + 1
    inits[name] = numpy_helper.from_array(array, name)
    model.graph.initializer.append(inits[name])
    return name


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        model.graph.ClearField("initializer")
        model.graph.initializer.extend(keep)


def candidates(model: onnx.ModelProto, min_elements: int, exclude=()) -> tuple[list[dict], list[dict]]:
    """The MatMuls and Gathers whose constant float weight can be quantized, and those left in float (why)."""
    inits = {t.name: t for t in model.graph.initializer}
    take, skip = [], []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        widx = 1 if node.op_type == "MatMul" else 0
        w = inits.get(node.input[widx])
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            continue  # not a constant 2-D float weight: nothing weight-only quantization could do
        entry = {"node": node.name, "op": node.op_type, "shape": list(w.dims)}
        if node.name in exclude:
            skip.append({**entry, "reason": "excluded (--exclude)"})
        elif node.op_type == "Gather" and attrs_of(node).get("axis", 0) != 0:
            skip.append({**entry, "reason": "Gather along an axis other than 0 (GatherBlockQuantized needs gather_axis 0)"})
        elif int(np.prod(w.dims)) < min_elements:
            skip.append({**entry, "reason": f"too small to gain ({int(np.prod(w.dims))} weights < {min_elements})"})
        elif not node.name:
            skip.append({**entry, "reason": "unnamed node (the quantizer selects nodes by name)"})
        else:
            take.append(entry)
    return take, skip


def quantize_matmuls(model: onnx.ModelProto, names: set[str], bits: int, block_size: int, symmetric: bool,
                     accuracy_level: int | None = None) -> onnx.ModelProto:
    """onnxruntime's MatMulNBitsQuantizer on exactly the MatMuls in `names` (on a copy)."""
    with quiet():
        from onnxruntime.quantization import matmul_nbits_quantizer as mq
        from onnxruntime.quantization.quant_utils import QuantFormat
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        others = [n.name for n in copy.graph.node if n.op_type == "MatMul" and n.name not in names]
        config = mq.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, bits=bits,
                                                 accuracy_level=accuracy_level, quant_format=QuantFormat.QOperator,
                                                 op_types_to_quantize=("MatMul",))
    with quantizing(" (MatMulNBits)"):
        quantizer = mq.MatMulNBitsQuantizer(copy, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                            accuracy_level=accuracy_level, nodes_to_exclude=others, algo_config=config)
        quantizer.process()
    return quantizer.model.model


def blockwise(table: np.ndarray, bits: int, block_size: int, symmetric: bool):
    """Quantize each row of `table` [rows, cols] in blocks of `block_size` columns: returns unsigned codes
    [rows, cols], scales [rows, blocks] and zero points [rows, blocks] (None when symmetric: the kernel's
    default zero point 2^(bits-1) is then implied)."""
    rows, cols = table.shape
    blocks = -(-cols // block_size)
    padded = np.zeros((rows, blocks * block_size), np.float32)
    padded[:, :cols] = table
    x = padded.reshape(rows, blocks, block_size)
    top = (1 << bits) - 1
    if symmetric:
        half = 1 << (bits - 1)
        scale = np.abs(x).max(axis=2) / (half - 0.5)  # -half*s .. (half-1)*s covers +-amax after rounding
        scale[scale == 0] = 1.0
        codes = np.clip(np.rint(x / scale[..., None]) + half, 0, top)
        zero = None
    else:
        lo, hi = np.minimum(x.min(axis=2), 0), np.maximum(x.max(axis=2), 0)  # 0 stays exactly representable
        scale = (hi - lo) / top
        scale[scale == 0] = 1.0
        zero = np.clip(np.rint(-lo / scale), 0, top)
        codes = np.clip(np.rint(x / scale[..., None]) + zero[..., None], 0, top)
        zero = zero.astype(np.uint8)
    return codes.reshape(rows, -1)[:, :cols].astype(np.uint8), scale.astype(np.float32), zero


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes along the last axis, low-order bits first (what GatherBlockQuantized reads)."""
    if bits == 8:
        return codes.astype(np.uint8)
    per = 8 // bits
    cols = codes.shape[-1]
    padded = np.zeros(codes.shape[:-1] + (-(-cols // per) * per,), np.uint8)
    padded[..., :cols] = codes
    groups = padded.reshape(codes.shape[:-1] + (-1, per)).astype(np.uint16)
    out = np.zeros(groups.shape[:-1], np.uint16)
    for k in range(per):
        out |= groups[..., k] << (k * bits)
    return out.astype(np.uint8)


def quantize_gathers(model: onnx.ModelProto, names: set[str], bits: int, block_size: int, symmetric: bool) -> None:
    """Replace each named Gather over a constant [rows, cols] table with GatherBlockQuantized (in place)."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.name not in names:
            nodes.append(node)
            continue
        table = ondisk.to_array(inits[node.input[0]]).astype(np.float32)
        codes, scale, zero = blockwise(table, bits, block_size, symmetric)
        base = node.input[0]
        inputs = [_add(model, inits, f"{base}_Q{bits}", pack(codes, bits)), node.input[1], _add(model, inits, f"{base}_scales", scale)]
        if zero is not None:
            inputs.append(_add(model, inits, f"{base}_zp", pack(zero, bits)))
        nodes.append(helper.make_node("GatherBlockQuantized", inputs,
                                      list(node.output), name=node.name, domain=MS_DOMAIN, bits=bits,
                                      block_size=block_size, gather_axis=0, quantize_axis=1))
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _drop_unused_initializers(model)


def build(model: onnx.ModelProto, chosen: list[dict], bits: int, block_size: int, symmetric: bool,
          accuracy_level: int | None = None) -> onnx.ModelProto:
    """The model with exactly the `chosen` candidates quantized."""
    matmuls = {c["node"] for c in chosen if c["op"] == "MatMul"}
    out = quantize_matmuls(model, matmuls, bits, block_size, symmetric, accuracy_level)
    gathers = {c["node"] for c in chosen if c["op"] == "Gather"}
    if gathers:
        quantize_gathers(out, gathers, bits, block_size, symmetric)
    return out


def _fallback(model, chosen: list[dict], make, feeds: list[dict], tolerance: float, report: dict) -> tuple[onnx.ModelProto, list[dict]]:
    """Keep the candidates whose quantization alone hurts the outputs most in float (fidelity.fallback_search), as few
    as reach `tolerance` (worst relative output error on `feeds`); `make(subset) -> model`."""
    names = [o.name for o in model.graph.output]
    ref = fidelity.outputs(model, feeds)

    def error(candidate, batches=None):
        batches = batches or len(feeds)
        return fidelity.error(ref[:batches], candidate, feeds[:batches], names)

    full = make(chosen)
    entry = fidelity.fallback_entry(report, tolerance, error(full))
    if entry["met"]:
        return full, chosen
    # one layer quantized alone: a direct measurement of each layer's damage, one inference each
    damage = sorted(((error(make([c]), RANKING_BATCHES), c["node"]) for c in chosen), reverse=True)

    def measure(floats):
        candidate = make([c for c in chosen if c["node"] not in set(floats)])
        return error(candidate), candidate

    _, qmodel, floats = fidelity.fallback_search(entry, [(n, e) for e, n in damage], measure, tolerance)
    return qmodel, [c for c in chosen if c["node"] not in set(floats)]


def run(model: onnx.ModelProto, config, feeds: list[dict], report: dict) -> onnx.ModelProto:
    """`--quantize int4 | int8-weight`: config is the pass's QuantizeConfig (block_size, symmetric, ...)."""
    bits = 4 if config.mode == "int4" else 8
    # 8-bit MatMulNBits in float compute ran 2.3x slower than float on MiniLM, with int8 compute 0.94x
    # (RESULTS.md, issue 14); 4-bit is not faster with it: onnxruntime's default stays for int4
    level = config.accuracy_level if config.accuracy_level is not None else (4 if bits == 8 else None)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    rewritten = gemms_to_matmul(work)
    take, skip = candidates(work, config.min_elements, exclude=set(config.exclude))
    if not config.embeddings:
        skip += [{**c, "reason": "embedding tables left in float (--no-quantize-embeddings)"} for c in take if c["op"] == "Gather"]
        take = [c for c in take if c["op"] != "Gather"]
    report["weight_only"] = {"bits": bits, "block_size": config.block_size, "symmetric": config.symmetric,
                             "algorithm": "round-to-nearest per block (onnxruntime MatMulNBitsQuantizer, default config)",
                             "accuracy_level": level, "gemm_rewritten_as_matmul": rewritten}
    if not take:
        report["warning"] = "no MatMul/Gemm/Gather with a constant 2-D float weight large enough: nothing quantized"

    def make(subset):
        return build(work, subset, bits, config.block_size, config.symmetric, level)

    if config.tolerance is not None and take and not feeds:
        report["warning"] = "--tolerance needs inputs the model runs with; none found, so every candidate was quantized"
    if config.tolerance is not None and take and feeds:
        qmodel, take = _fallback(work, take, make, feeds, config.tolerance, report)
        floats = set(report["fallback"]["kept_in_float"])
        skip += [{"node": n, "reason": "accuracy fallback (--tolerance)"} for n in floats]
    else:
        qmodel = make(take)
    report["weight_only"]["quantized"] = [{k: c[k] for k in ("node", "op", "shape")} for c in take]
    report["left_in_float"] = skip
    return qmodel
