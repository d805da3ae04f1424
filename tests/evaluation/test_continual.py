import numpy as np
import pytest

from streamlearn.evaluation import ContinualScores


def test_scores_from_an_accuracy_matrix() -> None:
    r = np.array([[0.9, 0.0, 0.0], [0.6, 0.8, 0.0], [0.5, 0.7, 0.95]])
    s = ContinualScores(3)
    for t in range(3):
        s.record(t, r[t, : t + 1])
    assert s.ra == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert s.la == pytest.approx((0.9 + 0.8 + 0.95) / 3)
    assert s.bti == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7) + 0.0) / 3)


def test_partial_run_scores_the_tasks_learned_so_far() -> None:
    s = ContinualScores(5)
    s.record(0, [0.9])
    s.record(1, [0.7, 0.8])
    assert s.learned == 2
    assert s.ra == pytest.approx(0.75)
    assert s.bti == pytest.approx(0.1)
