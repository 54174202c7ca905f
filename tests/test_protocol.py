"""The pass protocol: a new pass is one class and one entry in the pass list; the CLI gets its options from
its config, the pipeline runs it in order and provides what it requires; the terminal prints its summary."""
from __future__ import annotations

from dataclasses import dataclass, field

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim.cli import add_optimize_command, terminal_summary
from onnxslim.context import PassResult
from onnxslim.errors import SlimError
from onnxslim.passes import PASSES
from onnxslim.passes.cleanup import CleanupConfig
from onnxslim.passes.prune import PruneConfig
from onnxslim.pipeline import schedule
from onnxslim.protocol import FOLDED, NORMALIZED, Pass, option


@dataclass
class RoundConfig:
    decimals: int | None = field(default=None, metadata=option(
        "--round-weights", type=int, enables=True, help="Round float weights to this many decimals."))

    def check(self) -> None:
        if self.decimals is None or self.decimals < 0:
            raise SlimError(f"--round-weights {self.decimals}: give a number of decimals >= 0")


class RoundWeights(Pass):
    """A tiny lossy pass: float initializers rounded. Needs a FOLDED graph (so, after prune, cleanup again)."""
    name = "round_weights"
    config = RoundConfig
    preserved = frozenset({NORMALIZED})

    def requires(self, config):
        return {FOLDED}

    def run(self, model, config, ctx):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        changed = 0
        for init in out.graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype == np.float32:
                rounded = np.round(array, config.decimals)
                changed += int(np.any(rounded != array))
                init.CopyFrom(numpy_helper.from_array(rounded, init.name))
        return PassResult(out, {"rounded": changed}, modified=bool(changed))

    def summary(self, report):
        return [f"round_weights: {report['rounded']} weights rounded"]


TINY = RoundWeights()


def _conv_model(path=None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        onnx.save(model, path)
    return model


def test_a_registered_pass_gets_its_cli_option_runs_and_prints_its_summary(tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "out.onnx"
    _conv_model(src)
    group = click.Group()
    add_optimize_command(group, PASSES + (TINY,))
    result = CliRunner().invoke(group, ["optimize", str(src), str(dst), "--round-weights", "1", "--no-latency"])
    assert result.exit_code == 0, result.output
    assert "round_weights: 2 weights rounded" in result.output
    weights = [numpy_helper.to_array(i) for i in onnx.load(dst).graph.initializer]
    assert weights and all(np.array_equal(w, np.round(w, 1)) for w in weights)
    # its config's check runs before any work
    bad = CliRunner().invoke(group, ["optimize", str(src), str(dst), "--round-weights", "-1"])
    assert bad.exit_code == 2


def test_the_pipeline_provides_a_requirement_an_earlier_pass_took_away():
    model = _conv_model()
    configs = {"prune": PruneConfig(ratio=0.5, round_to=1), "round_weights": RoundConfig(decimals=2)}
    steps = schedule(PASSES + (TINY,), configs)
    assert [p.name for p, _ in steps] == ["cleanup", "prune", "round_weights"]
    result = onnxslim.optimize(model, configs=configs, passes=PASSES + (TINY,), latency=False)
    assert list(result.report["passes"]) == ["cleanup", "prune", "round_weights"]
    assert result.report["passes"]["prune"]["pruned_groups"][0]["after"] == 4
    assert "round_weights: 2 weights rounded" in terminal_summary(result.report, PASSES + (TINY,))


def test_bn_importance_keeps_batchnorm_through_cleanup():
    steps = schedule(PASSES, {"prune": PruneConfig(ratio=0.5, importance="bn")})
    assert steps[0][1].fold_bn is False
    assert schedule(PASSES, {"prune": PruneConfig(ratio=0.5)})[0][1].fold_bn is True


def test_fp16_with_a_lossy_pass_is_refused_before_any_work():
    with pytest.raises(SlimError, match="--fp16 works on the lossless path only"):
        schedule(PASSES, {"cleanup": CleanupConfig(fp16=True), "prune": PruneConfig(ratio=0.5)})


def test_an_unknown_pass_name_is_refused():
    with pytest.raises(SlimError, match="no pass named nope"):
        schedule(PASSES, {"nope": object()})
