"""Example streams: the shared MNIST continual-learning benchmarks and users' own example files."""

from streamlearn.streams.benchmark import STREAM_NAMES, Task, TaskStream, load_stream
from streamlearn.streams.files import examples_from_task_stream, read_examples
from streamlearn.streams.mnist import load_mnist_test

__all__ = [
    "STREAM_NAMES",
    "Task",
    "TaskStream",
    "examples_from_task_stream",
    "load_mnist_test",
    "load_stream",
    "read_examples",
]
