"""streamlearn.metrics: counts read back from the registry, the `_created` switch."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from streamlearn.metrics import (
    LearnerMetrics,
    counter_value,
    counter_values,
    disable_created_series,
    render,
)


@pytest.fixture
def created_series_on() -> Iterator[None]:
    """The switch is process-wide: start from prometheus_client's default and leave it there."""
    prometheus_client.enable_created_metrics()
    yield
    prometheus_client.enable_created_metrics()


def test_counts_read_back_are_the_registrys(created_series_on: None) -> None:
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    m.consumed.inc(7)
    m.rejected.labels(reason="bad_x").inc(2)
    m.rejected.labels(reason="not_json").inc()
    assert counter_value(m.consumed) == reg.get_sample_value("streamlearn_examples_consumed_total") == 7
    assert counter_value(m.checkpoints) == 0
    assert counter_values(m.rejected, "reason") == {"bad_x": 2, "not_json": 1}


def test_importing_metrics_leaves_created_series_alone_until_an_entry_point_disables_them(
    created_series_on: None,
) -> None:
    reg = CollectorRegistry()
    LearnerMetrics(reg).consumed.inc()
    assert b"streamlearn_examples_consumed_created" in render(reg)
    disable_created_series()
    text = render(reg)
    assert b"_created" not in text
    assert b"streamlearn_examples_consumed_total 1.0" in text


def test_the_model_total_is_a_gauge_beside_the_per_process_counter() -> None:
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    m.model_learned.set_function(lambda: 1200)
    m.learned.inc(200)
    assert reg.get_sample_value("streamlearn_model_examples_learned") == 1200
    assert reg.get_sample_value("streamlearn_examples_learned_total") == 200
