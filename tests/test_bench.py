"""`streamlearn bench` as a user runs it: a real subprocess, its stdout and exit code."""

import json
import subprocess
import sys

import pytest

from streamlearn.bench import run_bench
from streamlearn.streams import load_stream

KEYS = {"ra", "la", "bti", "prequential_accuracy", "examples_per_s", "wall_s"} | {
    "learner",
    "stream",
    "tasks",
    "seed",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_bench_json_is_the_last_line_and_has_the_contract_keys() -> None:
    res = cli("bench", "--stream", "permuted-mnist-10k", "--learner", "er", "--tasks", "2", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out) >= KEYS
    assert out["learner"] == "er" and out["stream"] == "permuted-mnist-10k" and out["tasks"] == 2
    for k in ("ra", "la", "prequential_accuracy"):
        assert 0.0 <= out[k] <= 1.0
    assert out["ra"] > 0.5  # two permuted tasks with replay: far above chance (0.1)
    assert out["examples"] == 2000 and out["examples_per_s"] > 0
    assert "task  2/2" in res.stderr  # progress goes to stderr


def test_bench_rejects_a_bad_hyper_parameter_with_exit_2() -> None:
    res = cli("bench", "--learner", "mer", "--tasks", "1", "--hparam", "lr=fast")
    assert res.returncode == 2
    assert "lr: expected float" in res.stderr


def test_bench_help_explains_the_scores() -> None:
    res = cli("bench", "--help")
    assert res.returncode == 0
    for word in ("RA", "LA", "BTI", "--learner", "--json", "--device"):
        assert word in res.stdout


@pytest.fixture(scope="module")
def two_tasks():
    return load_stream("rotated-mnist-10k", n_tasks=2)


def test_scores_are_consistent_with_the_accuracy_matrix(two_tasks) -> None:
    r = run_bench("sgd", two_tasks, seed=0)
    m = r.accuracy_matrix
    assert len(m) == 2 and len(m[1]) == 2
    assert r.ra == pytest.approx((m[1][0] + m[1][1]) / 2, abs=1e-4)
    assert r.la == pytest.approx((m[0][0] + m[1][1]) / 2, abs=1e-4)
    assert r.bti == pytest.approx(r.la - r.ra, abs=1e-4)
