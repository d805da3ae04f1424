"""streamlearn: online continual learning from Kafka."""

__version__ = "0.1.0"
