"""Replay memory: the reservoir-sampled buffer that MER, La-MAML and ER rehearse from."""

from streamlearn.replay.reservoir import ReservoirBuffer

__all__ = ["ReservoirBuffer"]
