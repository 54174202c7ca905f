"""Mutation fuzzing of the CLI in CI (issue 15): hypothesis draws structured and byte-level mutations of
the repo's own models with a fixed seed (derandomize), each is run as a process of its own under a 2 GB
address-space limit and a time limit, and any broken contract fails the test (see harness.py). About 5 s
of CPU: BATCHES x CASES runs, two at a time, each forked from a server that imported the CLI once
(tests/cli_fork.py). `benchmarks/fuzz_hour.py` runs the same for an hour."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz.harness import CanaryWatch, run_case
from fuzz.mutations import HypothesisChooser, draw_case

pytestmark = pytest.mark.slow  # many CLI runs in subprocesses

BATCHES, CASES, WORKERS = 2, 14, 2


@settings(max_examples=BATCHES, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_models_keep_the_cli_contract(data):
    chooser = HypothesisChooser(data)
    cases = [draw_case(chooser) for _ in range(CASES)]
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda c: run_case(c, timeout=60), cases))
    bad = [f"{o.case}: {o.problems} (exit {o.rc}: {o.last_line})" for o in outcomes if o.problems]
    assert not bad, "\n".join(bad)
    # the mutations reach the code: most runs are refused as bad input, some still succeed
    assert {o.rc for o in outcomes} & {0, 2}


def test_the_canary_watch_sees_an_open_through_a_symlink_by_another_process(tmp_path):
    """The read-outside-the-folder verdict rests on this: an open of the canary's inode by any process, by
    any path, is seen; a stat or an open of another file is not."""
    import subprocess
    import sys
    canary, other = tmp_path / "canary.bin", tmp_path / "other.bin"
    canary.write_bytes(b"x")
    other.write_bytes(b"y")
    (tmp_path / "link").symlink_to(canary)
    watch = CanaryWatch([canary])
    try:
        assert watch.ok
        subprocess.run([sys.executable, "-c", f"import os; os.stat({str(canary)!r}); open({str(other)!r}).read()"], check=True)
        assert not watch.opened()
        subprocess.run([sys.executable, "-c", f"open({str(tmp_path / 'link')!r}, 'rb').read(1)"], check=True)
        assert watch.opened()
    finally:
        watch.close()


def test_a_run_that_reads_a_canary_fails_its_case(monkeypatch):
    """End to end through the harness: the CLI pointed at a symlink to the parent canary reads it."""
    import fuzz.harness as harness
    from fuzz.mutations import Case
    case = Case("x.onnx", "inspect", "canary", files={"in.onnx": b"x"}, symlinks={"link": "@parent/canary_parent.bin"})
    assert run_case(case).problems == []
    line = harness.command_line
    monkeypatch.setattr(harness, "command_line", lambda c, model, out: line(c, model.parent / "link", out))
    assert run_case(case).problems == ["read outside the folder"]
