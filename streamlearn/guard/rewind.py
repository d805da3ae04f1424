"""An operator rollback to a named checkpoint: what the learner unlearns goes to quarantine too.

The learner takes the checkpoint's state, so it forgets every example it learned since. Those are
no longer in any journal (the champions since were promoted), but they are still in the source
topics: every message from the checkpoint's offsets up to what the daemon has consumed is read
back and copied, unchanged with its source headers, to ``guard.quarantine_topic``. The intent
goes first into a checkpoint: the learner takes the checkpoint's state and the daemon checkpoints
it with the ranges still to quarantine (``Guardrails.rewind``), then sends them and clears the
ranges. A kill -9 before that checkpoint leaves the state before (nothing quarantined, nothing
unlearned; the operator asks again); after it, the restart sends the ranges (again: duplicates,
never a loss). Some of them may also have been dead-lettered or quarantined before (a copy in two
topics, never none): an example is either learned (counted in the checkpoint's learner), or in one
of those topics. A checkpoint written before a later rollback (an earlier ``Guardrails.lineage``)
is refused: its model learned examples that are in quarantine now.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition

from streamlearn.config import KafkaConfig
from streamlearn.ingest.kafka_options import client_options

#: one message read back: (topic, partition, offset, value)
Message = tuple[str, int, int, bytes | None]


def unlearned_ranges(
    checkpoint_offsets: dict[str, int], consumed: dict[TopicPartition, int]
) -> dict[str, list[int]]:
    """Per ``topic:partition``, [the checkpoint's next offset, the daemon's next offset), where not
    empty (the form the checkpoint keeps while they are not yet quarantined).

    >>> tp = TopicPartition("examples", 0)
    >>> unlearned_ranges({"examples:0": 40}, {tp: 90, TopicPartition("examples", 1): 5})
    {'examples:0': [40, 90], 'examples:1': [0, 5]}
    """
    out = {}
    for tp, end in consumed.items():
        key = f"{tp.topic}:{tp.partition}"
        start = int(checkpoint_offsets.get(key, 0))
        if end > start:
            out[key] = [start, int(end)]
    return out


def read_ranges(
    bootstrap_servers: str,
    cfg: KafkaConfig,
    spans: dict[str, list[int]],
    *,
    timeout_s: float = 60.0,
) -> Iterator[Message]:
    """Every message in ``spans`` (``topic:partition`` -> [start, end)), without a consumer group."""
    if not spans:
        return
    ranges = {}
    for key, (start, end) in spans.items():
        topic, _, partition = key.rpartition(":")
        ranges[TopicPartition(topic, int(partition))] = (start, end)
    consumer = KafkaConsumer(
        **client_options(cfg, bootstrap_servers), enable_auto_commit=False, group_id=None
    )
    try:
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        left = set(ranges)
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"quarantine read-back: {sorted(map(str, left))} not read within {timeout_s:.0f} s"
                )
            for tp, records in consumer.poll(timeout_ms=500).items():
                end = ranges[tp][1]
                for rec in records:
                    if rec.offset < end:
                        yield tp.topic, tp.partition, rec.offset, rec.value
            left = {tp for tp in left if consumer.position(tp) < ranges[tp][1]}
    finally:
        consumer.close()
