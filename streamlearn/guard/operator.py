"""The operator's controls: pause learning, resume, promote now, roll back (to the champion or to a
named checkpoint). Behind the bearer token, as ``POST /v2/admin/<action>`` on the learner's server
and as ``streamlearn admin <action>``; the server hands them to the learner through the shared
snapshot's request slots (an action code and one integer), and the learner acts between updates.

A checkpoint is named by its file name, ``ckpt-<examples>-<seq>.slc``; it travels as the integer
``examples * 1_000_000 + seq`` (0: the champion).

>>> parse("rollback ckpt-000000001200-000003.slc")
('rollback', 1200000003)
>>> checkpoint_name(1200000003)
'ckpt-000000001200-000003.slc'
"""

from __future__ import annotations

import re

from streamlearn.serving.snapshot import ACTIONS

_NAME = re.compile(r"ckpt-(\d{12})-(\d{6})\.slc")


def parse(action: str) -> tuple[str, int]:
    """``"<action>[ <checkpoint name>]"`` → (action, integer argument); ValueError if unknown."""
    name, _, arg = action.partition(" ")
    if name not in ACTIONS:
        raise ValueError(f"{name!r} is not an action of the learner's server (one of {', '.join(ACTIONS)})")
    if not arg:
        return name, 0
    m = _NAME.fullmatch(arg.strip())
    if name != "rollback" or m is None:
        raise ValueError(
            f"{arg!r}: expected a checkpoint name ckpt-<12 digits>-<6 digits>.slc (rollback only)"
        )
    return name, int(m.group(1)) * 1_000_000 + int(m.group(2))


def checkpoint_name(arg: int) -> str:
    examples, seq = divmod(arg, 1_000_000)
    return f"ckpt-{examples:012d}-{seq:06d}.slc"
