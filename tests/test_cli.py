"""The CLI in processes of its own: each command is a child forked from a server that imported the CLI once
(tests/cli_fork.py: its own folder, environment, stdout/stderr and exit code); `python -m onnxslim.cli` and
the console script (when it is on the venv's bin path) are checked as real subprocesses.

Every command is started at once by a module fixture (a few at a time); each test then checks one command's
exit code, stderr, written files and report numbers."""
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from cli_fork import run_cli

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
FOLDED = MODELS / "digits_resnet_folded.onnx"
BN_KEPT = MODELS / "digits_resnet.onnx"
EVAL = MODELS / "digits_eval.npz"
CLI = [sys.executable, "-m", "onnxslim.cli"]
PARALLEL = 4


@dataclass
class Run:
    args: list
    folder: Path
    before: dict = field(default=None, repr=False)  # path -> bytes (None for a folder), before the run
    rc: int = None
    out: str = ""
    err: str = ""

    def files(self) -> dict:
        """Every file (bytes) and folder (None) under the run's folder."""
        return {str(p.relative_to(self.folder)): (p.read_bytes() if p.is_file() else None)
                for p in sorted(self.folder.rglob("*"))}

    def names(self) -> list:
        return sorted(p.name for p in self.folder.iterdir())


def _env():
    env = dict(os.environ)
    env.pop("ONNXSLIM_DEBUG", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _execute(run: Run) -> Run:
    proc = run_cli(run.args, cwd=run.folder, env=_env(), timeout=120)
    run.rc, run.out, run.err = proc.returncode, proc.stdout, proc.stderr
    return run


# -- inputs the commands read -----------------------------------------------------------------------------

def _dynamic_hw_model(path):
    """Conv(3->8, 3x3) -> Relu -> Conv(8->4, 1x1) -> GlobalAveragePool on x [batch, 3, h, w]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (4, 8, 1, 1))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4, 1, 1])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)


def _outside_data_model(folder):
    """in.onnx whose weights live in ../x.bin (the file exists: the refusal is about where it is)."""
    model = onnx.load(str(FOLDED))
    onnx.save_model(model, str(folder / "in.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    os.replace(folder / "weights.bin", folder.parent / f"{folder.name}_x.bin")
    proto = onnx.load(str(folder / "in.onnx"), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = f"../{folder.name}_x.bin"
    (folder / "in.onnx").write_bytes(proto.SerializeToString())


def _eval_x(n=None):
    x = np.load(EVAL)["input"]
    return x if n is None else x[:n]


def _setup(folder: Path, name: str):
    shutil.copy(FOLDED, folder / "in.onnx")
    if name == "missing_file":
        os.unlink(folder / "in.onnx")
    elif name in ("not_onnx", "inspect_not_onnx"):
        (folder / "in.onnx").write_text("this is a text file, not a model\n")
    elif name == "truncated":
        data = FOLDED.read_bytes()
        (folder / "in.onnx").write_bytes(data[: len(data) // 3])
    elif name == "external_outside":
        _outside_data_model(folder)
    elif name.startswith("external_data"):
        onnx.save_model(onnx.load(str(FOLDED)), str(folder / "in.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    elif name == "data_wrong_name":
        np.savez(folder / "d.npz", image=_eval_x(16))
    elif name == "data_wrong_shape":
        np.savez(folder / "d.npz", input=np.zeros((16, 1, 9, 9), np.float32))
    elif name == "data_wrong_rank":
        np.savez(folder / "d.npz", input=_eval_x(16)[:, 0])
    elif name == "data_wrong_dtype":
        np.savez(folder / "d.npz", input=(_eval_x(16) * 16).astype(np.int64))
    elif name.startswith("dynamic"):
        os.unlink(folder / "in.onnx")
        _dynamic_hw_model(folder / "in.onnx")
        if name == "dynamic_preprocess":
            (folder / "in.preprocess.json").write_text('{"crop": 48}')
    elif name == "bn_kept":
        shutil.copy(BN_KEPT, folder / "in.onnx")
    elif name == "output_is_folder":
        (folder / "odir").mkdir()
    elif name == "output_is_data":
        np.save(folder / "d.npy", _eval_x(16))
    elif name == "min_cosine_existing_output":
        (folder / "out.onnx").write_bytes(b"an older result the failed run must not touch")


FAST = ["--no-latency"]
# name: (arguments, expected exit code, a fragment the error line must hold)
BAD = {
    "missing_file": (["in.onnx", "out.onnx", "--prune", "0.3"], 2, "no such file"),
    "not_onnx": (["in.onnx", "out.onnx", "--prune", "0.3"], 2, "not an ONNX model"),
    "truncated": (["in.onnx", "out.onnx", "--prune", "0.3"], 2, "corrupt"),
    "external_outside": (["in.onnx", "out.onnx", "--prune", "0.3"], 2, "outside the model's folder"),
    "data_wrong_name": (["in.onnx", "out.onnx", "--prune", "0.3", "--data", "d.npz", *FAST], 2, "'input'"),
    "data_wrong_shape": (["in.onnx", "out.onnx", "--prune", "0.3", "--data", "d.npz", *FAST], 2, "shape"),
    "data_wrong_rank": (["in.onnx", "out.onnx", "--prune", "0.3", "--data", "d.npz", *FAST], 2, "rank"),
    "data_wrong_dtype": (["in.onnx", "out.onnx", "--prune", "0.3", "--data", "d.npz", *FAST], 2, "int64"),
    "data_missing": (["in.onnx", "out.onnx", "--prune", "0.3", "--data", "nope.npz", *FAST], 2, "nope.npz"),
    "ratio_one": (["in.onnx", "out.onnx", "--prune", "1.0"], 2, "--prune"),
    "ratio_negative": (["in.onnx", "out.onnx", "--prune", "-0.1"], 2, "--prune"),
    "target_macs_zero": (["in.onnx", "out.onnx", "--target-macs", "0"], 2, "--target-macs"),
    "target_macs_over_one": (["in.onnx", "out.onnx", "--target-macs", "1.5"], 2, "--target-macs"),
    "target_macs_impossible": (["in.onnx", "out.onnx", "--target-macs", "0.001", *FAST], 2, "--target-macs"),
    "output_is_input": (["in.onnx", "in.onnx", "--prune", "0.3"], 2, "input"),
    "output_is_input_dash_o": (["in.onnx", "-o", "./in.onnx", "--prune", "0.3"], 2, "input"),
    "two_outputs": (["in.onnx", "a.onnx", "-o", "b.onnx", "--prune", "0.3"], 2, "two output paths"),
    "input_is_folder": ([".", "out.onnx", "--prune", "0.3"], 2, "folder"),
    "output_is_folder": (["in.onnx", "odir", "--prune", "0.3", *FAST], 2, "folder"),
    "input_shape_wrong_name": (["in.onnx", "out.onnx", "--prune", "0.3", "--input-shape", "image:1,1,8,8", *FAST], 2, "input"),
    "input_shape_wrong_dims": (["in.onnx", "out.onnx", "--prune", "0.3", "--input-shape", "input:2,1,9,9", *FAST], 2, "input"),
    "bn_importance_without_bn": (["in.onnx", "out.onnx", "--prune", "0.3", "--importance", "bn"], 2, "BatchNormalization"),
    "external_data_as_output": (["in.onnx", "weights.bin", "--prune", "0.3", "-q", *FAST], 2, "external data"),
    "inspect_not_onnx": (["inspect", "in.onnx"], 2, "not an ONNX model"),
    "inspect_missing": (["inspect", "nope.onnx"], 2, "no such file"),
    "min_cosine": (["in.onnx", "out.onnx", "--prune", "0.5", "--min-cosine", "0.999", "--report", "r.json", *FAST], 1, "cosine"),
    "min_cosine_existing_output": (["in.onnx", "out.onnx", "--prune", "0.5", "--min-cosine", "0.999", *FAST], 1, "cosine"),
    "target_latency_out_of_range": (["in.onnx", "out.onnx", "--target-latency", "1.5", *FAST], 2, "--target-latency"),
    "two_targets": (["in.onnx", "out.onnx", "--target-macs", "0.5", "--target-latency", "0.5", *FAST], 2, "exactly one"),
    "zero_threads": (["in.onnx", "out.onnx", "--prune", "0.3", "--threads", "0"], 2, "--threads"),
}
GOOD = {
    "prune_positional": ["in.onnx", "out.onnx", "--prune", "0.3", "--report", "r.json", "--data", str(EVAL), *FAST],
    "target_macs_dash_o": ["in.onnx", "-o", "sub/out.onnx", "--target-macs", "0.7", "--report", "r.json", *FAST],
    "target_latency": ["in.onnx", "out.onnx", "--target-latency", "0.8", "--report", "r.json", "--threads", "2"],
    "dynamic_with_input_shape": ["in.onnx", "out.onnx", "--prune", "0.5", "--input-shape", "x:2,3,16,16",
                                 "--report", "r.json", *FAST],
    "dynamic_without_input_shape": ["in.onnx", "out.onnx", "--prune", "0.5", "--report", "r.json", *FAST],
    "dynamic_inspect": ["inspect", "in.onnx"],
    "dynamic_preprocess": ["in.onnx", "out.onnx", "--lowrank", "0.9", "--report", "r.json", *FAST],
    "input_shape_batch": ["in.onnx", "out.onnx", "--prune", "0.3", "--input-shape", "input:3,1,8,8", "-q", *FAST],
    "bn_kept": ["in.onnx", "out.onnx", "--prune", "0.3", "--importance", "bn", "--report", "r.json", "-q", *FAST],
    "prune_zero": ["in.onnx", "out.onnx", "--prune", "0", "--report", "r.json", "-q", *FAST],
    "no_pass": ["in.onnx", "out.onnx", "--data", str(EVAL), *FAST],
    "no_pass_external_data": ["in.onnx", "out.onnx", "--external-data", "--size-threshold", "4096", "--report", "r.json", *FAST],
    "inspect": ["inspect", "in.onnx"],
    "inspect_json": ["inspect", "in.onnx", "--json"],
}


# bad input found by these tests and since refused by cli.py: same checks as BAD (last item: what happened before)
KNOWN_BAD = {
    "report_is_input": (["in.onnx", "out.onnx", "--prune", "0.3", "--report", "in.onnx", "-q", *FAST], 2, "input",
                        "--report equal to the input model overwrites the input with JSON (exit 0)"),
    "report_is_output": (["in.onnx", "out.onnx", "--prune", "0.3", "--report", "out.onnx", "-q", *FAST], 2, "report",
                         "--report equal to the output path overwrites the model just written with JSON (exit 0)"),
    "output_is_data": (["in.onnx", "d.npy", "--prune", "0.3", "--data", "d.npy", "-q", *FAST], 2, "d.npy",
                       "an output path equal to the --data file overwrites the user's data with the model (exit 0)"),
    "min_cosine_without_validation": (["in.onnx", "out.onnx", "--prune", "0.5", "--min-cosine", "0.999",
                                       "--no-validate", "-q"], 2, "--min-cosine",
                                      "--min-cosine with --no-validate is silently ignored: the fidelity gate never runs (exit 0)"),
    "not_a_number": (["in.onnx", "out.onnx", "--prune", "abc"], 2, "--prune",
                     "click's own usage errors print 3 lines (Usage/Try/Error) without the 'onnxslim: error:' prefix"),
    "unknown_option": (["in.onnx", "out.onnx", "--bogus"], 2, "--bogus",
                       "click's own usage errors print 3 lines (Usage/Try/Error) without the 'onnxslim: error:' prefix"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    todo = {}
    for name, args in [*((n, a) for n, (a, _, _) in BAD.items()), *((n, a) for n, (a, *_) in KNOWN_BAD.items()),
                       *GOOD.items()]:
        folder = root / name
        folder.mkdir()
        _setup(folder, name)
        todo[name] = Run(args, folder)
        todo[name].before = todo[name].files()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(_execute, todo.values()))
    return todo


# -- bad input: exit code, one line, nothing written ----------------------------------------------------

def _check_bad(run, rc, fragment):
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert run.rc == rc, (run.rc, run.err)
    assert "Traceback" not in run.err
    assert len(lines) == 1 and lines[0].startswith("onnxslim: error: "), run.err
    assert fragment in lines[0], lines[0]
    assert run.files() == run.before  # nothing written or changed, no temp files left


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_one_line_and_nothing_written(runs, name):
    _, rc, fragment = BAD[name]
    _check_bad(runs[name], rc, fragment)


@pytest.mark.parametrize("name", list(KNOWN_BAD))
def test_more_bad_input_refused(runs, name):
    _, rc, fragment, _ = KNOWN_BAD[name]
    _check_bad(runs[name], rc, fragment)


def test_fidelity_failure_message_says_nothing_written(runs):
    assert "nothing written" in runs["min_cosine"].err


# -- good runs ------------------------------------------------------------------------------------------

def _report(run):
    return json.loads((run.folder / "r.json").read_text())


def _conv_widths(model):
    inits = {t.name: t for t in model.graph.initializer}
    return [inits[n.input[1]].dims[0] for n in model.graph.node if n.op_type == "Conv"]


def _check_valid_pruned(path, original=FOLDED):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ref = onnx.load(str(original))
    assert [i.name for i in model.graph.input] == [i.name for i in ref.graph.input]
    assert [o.name for o in model.graph.output] == [o.name for o in ref.graph.output]
    assert sum(_conv_widths(model)) < sum(_conv_widths(ref))
    return model


def _logits(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_prune_positional_output_with_data(runs):
    run = runs["prune_positional"]
    assert run.rc == 0, run.err
    assert "Traceback" not in run.err
    out = run.folder / "out.onnx"
    model = _check_valid_pruned(out)
    # 30% of 32/64 channels, kept widths rounded to a multiple of 8: 32 -> 24 (or 16), 64 -> 48 (or 40)
    assert all(w % 8 == 0 for w in _conv_widths(model))
    report = _report(run)
    assert report["output"] == "out.onnx"
    assert 0 < report["validation"]["macs"]["ratio"] < 1
    assert "digits_eval.npz" in report["validation"]["data"]
    # the validation numbers are the real ones: recompute them on the first 64 samples
    x = _eval_x(64)
    a, b = _logits(str(FOLDED), x), _logits(str(out), x)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    metrics = report["validation"]["outputs"]["logits"]
    assert metrics["cosine"] == pytest.approx(float(cos.mean()), abs=1e-4)
    assert metrics["top1_agreement"] == pytest.approx(float(np.mean(a.argmax(1) == b.argmax(1))), abs=1e-9)
    assert metrics["max_abs_error"] == pytest.approx(float(np.abs(a - b).max()), rel=1e-3)
    # the terminal table shows them too
    assert "cosine" in run.out and "wrote out.onnx" in run.out
    assert sorted(run.names()) == ["in.onnx", "out.onnx", "r.json"]


def test_prune_zero_keeps_the_model(runs):
    run = runs["prune_zero"]
    assert run.rc == 0, run.err
    out = run.folder / "out.onnx"
    assert _conv_widths(onnx.load(str(out))) == _conv_widths(onnx.load(str(FOLDED)))
    metrics = _report(run)["validation"]["outputs"]["logits"]
    assert metrics["cosine"] > 1 - 1e-6 and metrics["max_abs_error"] < 1e-4
    x = _eval_x(32)
    np.testing.assert_allclose(_logits(str(out), x), _logits(str(FOLDED), x), rtol=1e-5, atol=1e-5)


def test_no_pass_is_cleanup_and_validation(runs):
    run = runs["no_pass"]
    assert run.rc == 0, run.err
    assert run.err.startswith("onnxslim: no pass requested")
    assert "cosine 1.0" in run.out or "cosine 0.99999" in run.out
    x = _eval_x(32)
    np.testing.assert_allclose(_logits(str(run.folder / "out.onnx"), x), _logits(str(FOLDED), x), rtol=1e-5, atol=1e-5)


def test_no_pass_prints_the_summary_and_writes_external_data(runs):
    """The bare command says what changed (nodes, initializers, size, rules) and --external-data puts the
    weights beside the model."""
    run = runs["no_pass_external_data"]
    assert run.rc == 0, run.err
    before, after = onnx.load(str(FOLDED)), onnx.load(str(run.folder / "out.onnx"))
    assert f"model: nodes {len(before.graph.node)} -> {len(after.graph.node)}, initializers" in run.out
    assert (run.folder / "out.onnx.data").stat().st_size > (run.folder / "out.onnx").stat().st_size
    assert _report(run)["passes"]["cleanup"]["size_threshold"] == 4096
    x = _eval_x(32)
    np.testing.assert_allclose(_logits(str(run.folder / "out.onnx"), x), _logits(str(FOLDED), x), rtol=1e-5, atol=1e-5)


def test_target_macs_with_dash_o(runs):
    from onnxslim.cost import model_cost
    run = runs["target_macs_dash_o"]
    assert run.rc == 0, run.err
    out = run.folder / "sub" / "out.onnx"
    _check_valid_pruned(out)
    report = _report(run)
    assert report["validation"]["macs"]["ratio"] <= 0.7
    # measured independently of the report
    before = model_cost(onnx.load(str(FOLDED)), {"input": (1, 1, 8, 8)})["macs"]
    after = model_cost(onnx.load(str(out)), {"input": (1, 1, 8, 8)})["macs"]
    assert after <= 0.7 * before
    assert after >= 0.3 * before  # a budget, not a wipe-out


def test_target_latency_meets_the_profiled_estimate(runs):
    run = runs["target_latency"]
    assert run.rc == 0, run.err
    _check_valid_pruned(run.folder / "out.onnx")
    prune = _report(run)["passes"]["prune"]
    assert prune["latency_model"]["estimated_fraction"] <= 0.8 + 1e-6
    assert prune["latency_model"]["threads"] == 2 and prune["latency_model"]["mapped_fraction"] > 0.5  # --threads 2
    assert _report(run)["validation"]["latency_ms"]["ratio"] > 0
    assert "latency model:" in run.out
    assert _report(run)["validation"]["macs"]["ratio"] < 1.0


def test_input_shape_resolves_dynamic_dims(runs):
    run = runs["dynamic_with_input_shape"]
    assert run.rc == 0, run.err
    report = _report(run)
    # MACs at the given shape: 2 * 16*16 * (8*3*3*3 + 4*8)
    assert report["validation"]["macs"]["before"] == 2 * 16 * 16 * (8 * 27 + 4 * 8)
    model = onnx.load(str(run.folder / "out.onnx"))
    onnx.checker.check_model(model)
    assert _conv_widths(model) == [4, 4]  # 8 -> 4 at 50%; the output's 4 channels are frozen
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "h", "w"]  # still dynamic


def test_dynamic_dims_need_no_input_shape(runs):
    run = runs["dynamic_without_input_shape"]
    assert run.rc == 0, run.err
    report = _report(run)
    # the first common size runs the original: batch 1, 224x224, and the report says it was chosen
    assert report["validation"]["input_shapes"] == {"x": {"shape": [1, 3, 224, 224], "source": "auto"}}
    assert report["validation"]["macs"]["before"] == 224 * 224 * (8 * 27 + 4 * 8)
    assert report["validation"]["outputs"]["y"]["cosine"] > 0.5
    model = onnx.load(str(run.folder / "out.onnx"))
    assert _conv_widths(model) == [4, 4]
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, "h", "w"]


def test_preprocess_file_gives_the_run_shape(runs):
    run = runs["dynamic_preprocess"]
    assert run.rc == 0, run.err
    assert _report(run)["validation"]["input_shapes"] == {"x": {"shape": [1, 3, 48, 48], "source": "preprocess"}}


def test_inspect_dynamic_dims(runs):
    run = runs["dynamic_inspect"]
    assert run.rc == 0, run.err
    assert "x:1x3x224x224 (auto)" in run.out and "prunable" in run.out


def test_input_shape_for_the_batch(runs):
    run = runs["input_shape_batch"]
    assert run.rc == 0, run.err
    assert run.out == "" and run.err == ""  # -q
    _check_valid_pruned(run.folder / "out.onnx")


def test_bn_importance_on_the_bn_kept_model(runs):
    run = runs["bn_kept"]
    assert run.rc == 0, run.err
    report = _report(run)
    assert report["passes"]["prune"]["importance"] == "bn"
    assert report["passes"]["cleanup"]["batchnorm_folded"] == 0  # BN stays for the criterion to read
    assert report["passes"]["prune"]["pruned_groups"]
    model = _check_valid_pruned(run.folder / "out.onnx", original=BN_KEPT)
    x = _eval_x(8)
    assert _logits(str(run.folder / "out.onnx"), x).shape == (8, 10)


def test_inspect_lists_groups_and_frozen_reason(runs):
    run = runs["inspect"]
    assert run.rc == 0, run.err
    assert "channel groups" in run.out
    assert "why frozen: graph output 'logits'" in run.out
    group_lines = [line for line in run.out.splitlines() if line.strip().startswith("#")]
    assert len(group_lines) == 6
    assert sum("prunable" in line for line in group_lines) == 5
    assert "Conv" in run.out and "MACs" in run.out
    assert run.names() == ["in.onnx"]  # inspect writes nothing


def test_inspect_json(runs):
    run = runs["inspect_json"]
    assert run.rc == 0, run.err
    data = json.loads(run.out)
    assert data["summary"]["groups"] == 6 and data["summary"]["prunable_groups"] == 5
    assert data["macs"] == 3295872  # digits ResNet at batch 1
    frozen = [g for g in data["groups"] if not g.get("prunable")]
    assert any("graph output 'logits'" in json.dumps(g) for g in frozen)
    assert len(data["layers"]) == 9  # 8 Conv + Gemm


# -- things outside the parallel batch --------------------------------------------------------------------

def _one(args, folder):
    return _execute(Run(args, folder))


def test_unwritable_report_path_writes_nothing(tmp_path):
    shutil.copy(FOLDED, tmp_path / "in.onnx")
    (tmp_path / "r.json").mkdir()  # a folder where the report should go
    run = _one(["in.onnx", "out.onnx", "--prune", "0.3", "--report", "r.json", *FAST], tmp_path)
    assert run.rc == 2, run.err
    assert run.err.startswith("onnxslim: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "r.json"]


def test_report_onto_the_inputs_external_data_is_refused(tmp_path):
    _setup(tmp_path, "external_data_report")
    before = (tmp_path / "weights.bin").read_bytes()
    run = _one(["in.onnx", "out.onnx", "--prune", "0.3", "--report", "weights.bin", "-q", *FAST], tmp_path)
    assert (tmp_path / "weights.bin").read_bytes() == before
    assert run.rc == 2 and run.err.startswith("onnxslim: error: ")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow
def test_console_script_when_installed(tmp_path):
    script = Path(sys.executable).with_name("onnxslim")
    if not script.exists():
        script = shutil.which("onnxslim")
        if script is None:
            pytest.skip("no onnxslim console script on this install")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "inspect" in proc.stdout and "--prune" in subprocess.run(
        [str(script), "optimize", "--help"], capture_output=True, text=True, timeout=60, env=_env()).stdout
