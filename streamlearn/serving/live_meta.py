"""What the learner adds to the metadata it publishes each second for the live page (``GET /``).

The learner already hands its server process the label names and its Prometheus text once a second
(``Publisher.publish_text``); the page needs two facts the metrics do not carry: the task being
learned (its changes are marked on the charts) and one recent example, which the page's "random
example" button sends to ``POST /predict`` (the server process cannot read Kafka, and the replay
buffer lives in the learner). One row is a few kilobytes: the copy costs the learner nothing it
would notice.

>>> import numpy as np
>>> from streamlearn.delivery import Pending
>>> from streamlearn.ingest.decode import Example
>>> from streamlearn.ingest.labels import TaskMap
>>> pending, tasks = Pending(), TaskMap()
>>> page_meta(["cat"], "mer", pending, tasks)
{'labels': ['cat'], 'learner': 'mer', 'task_names': [], 'task': None, 'example': None}
>>> pending.examples.append(Example(np.array([0.5, 1/3], "float32"), 0, "cat", tasks.index("t1"), None, None))
>>> page_meta(["cat"], "mer", pending, tasks)["example"]
{'x': [0.5, 0.33333], 'label': 'cat', 'task': 't1'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamlearn.delivery import Pending
    from streamlearn.ingest.labels import TaskMap

#: decimals kept of each feature of the published example (the page sends it back to /predict)
DECIMALS = 5


def page_meta(labels: list[str], learner: str, pending: Pending, tasks: TaskMap) -> dict[str, Any]:
    """The metadata dict the learner publishes: label names, learner, current task, one example."""
    # string task ids: the metrics label per-task accuracy by index, the page shows the names
    meta: dict[str, Any] = {"labels": labels, "learner": learner, "task_names": tasks.state_dict()["labels"]}
    ex = pending.examples[-1] if pending.examples else pending.last
    if ex is None:
        return {**meta, "task": None, "example": None}
    task = None if ex.task is None else tasks.name(ex.task)
    row = [round(float(v), DECIMALS) for v in ex.x.tolist()]
    return {**meta, "task": task, "example": {"x": row, "label": ex.label, "task": task}}
