"""A fleet of identical ``streamlearn run`` processes: one active learner, hot standbys, fencing.

``lease``: the leadership lease beside the checkpoints (S3 conditional writes, or ``flock``);
``leader``: standby serving, takeover, renewal and the fence the checkpointer asks;
``member``: a process's life in the fleet (standby ⇄ active, a deposed active a standby again).
"""

from streamlearn.fleet.leader import Fleet
from streamlearn.fleet.member import run_member

__all__ = ["Fleet", "run_member"]
