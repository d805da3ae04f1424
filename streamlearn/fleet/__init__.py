"""A fleet of identical ``streamlearn run`` processes: one active learner, hot standbys, fencing.

``lease``: the leadership lease beside the checkpoints (S3 conditional writes, or ``flock``);
``leader``: standby serving, takeover, renewal and the fence the checkpointer asks.
"""

from streamlearn.fleet.leader import Deposed, Fleet, join_fleet

__all__ = ["Deposed", "Fleet", "join_fleet"]
