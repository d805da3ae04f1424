"""Evaluation: continual-learning scores (offline benchmark) and prequential metrics (live)."""

from streamlearn.evaluation.continual import ContinualScores

__all__ = ["ContinualScores"]
