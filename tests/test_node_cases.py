"""ONNX's backend node cases through the bare optimizer (tests/node_cases.py): a deterministic subset for CI,
one case per op family in a fixed spread plus the cases that used to fail (attention/rotary/causal-conv/
group-norm `_expanded` cases folded with wrong static shapes, Shape start/end, string and 16/32/64-bit
unsigned inputs). The whole corpus is a benchmark: `python benchmarks/bench_node_cases.py`."""
import pytest

import node_cases

# the cases that failed before issue 10 (broken, wrong or refused), one or two per cause
HARD = [
    "test_attention_4d_expanded", "test_attention_3d_gqa_expanded", "test_attention_local_window_expanded",
    "test_rotary_embedding_expanded", "test_causal_conv_with_state_basic_expanded",
    "test_group_normalization_example_expanded", "test_affine_grid_2d_expanded",
    "test_shape_start_1_end_2", "test_shape_end_negative_1", "test_shape_clip_start",
    "test_add_uint64", "test_bitshift_left_uint16", "test_bitwise_xor_i16_3d", "test_equal_string",
    "test_ai_onnx_ml_label_encoder_string_int", "test_div_int8", "test_edge_pad", "test_split_to_sequence_1",
    "test_mvn",  # onnx's strict inference fails inside MeanVarianceNormalization's own function body
]
FAMILY_STRIDE = 4  # every 4th op family (sorted), first case of each: ~50 families


def _subset():
    cases = node_cases.load_cases()
    families = sorted({node_cases.family(c.name) for c in cases})[::FAMILY_STRIDE]
    picked = node_cases.sample([c for c in cases if node_cases.family(c.name) in families], per_family=1)
    names = {c.name for c in picked}
    return picked + [c for c in cases if c.name in HARD and c.name not in names]


CASES = _subset()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_comes_out_valid_with_expected_outputs(case):
    outcome = node_cases.run_case(case)
    if outcome.status == "skipped":
        pytest.skip(outcome.detail)
    assert outcome.status == "ok", f"{outcome.status}: {outcome.detail}"


def test_subset_covers_the_hard_cases_and_many_families():
    names = {c.name for c in CASES}
    assert set(HARD) <= names
    assert len({node_cases.family(n) for n in names}) >= 40
