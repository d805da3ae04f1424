"""CUDA graphs for the device path (``fast_path="cuda_graph"``): an update's kernels captured once,
then replayed with new inputs — one launch instead of hundreds.

A MER example on the 784-100-100-10 MLP is 55 sequential single-example steps of ~30 small kernels
each; on a GPU their launch costs dominate. ``run`` captures one call of a device-path function
(MER's example, La-MAML's glance and update) per input shape, and replays it afterwards, copying
the new inputs into the captured ones. The function must keep every tensor where the capture put
it: it changes the learner's tensors in place (parameters, La-MAML's rates) and returns a device
scalar, which the next replay overwrites (read it before).

NOT YET RUN ON A GPU: written and reviewed against the PyTorch documentation of
``torch.cuda.graphs`` (warm-up on a side stream, capture, replay), on a machine without CUDA; the
tests that would run it are marked ``cuda``. Until it has run there, it is opt-in only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: At most this many shapes captured per learner (each graph keeps its own memory pool); beyond,
#: calls run eagerly. A learner has one steady shape, plus a few while its replay memory fills.
MAX_GRAPHS = 16


class Graphed:
    """One captured call of ``fn(*inputs)`` that changes ``state`` in place and returns a tensor."""

    def __init__(
        self, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], state: Sequence[torch.Tensor]
    ) -> None:
        self.inputs = [t.clone() for t in inputs]
        live = [t.detach() for t in state]
        saved = [t.clone() for t in live]
        # Warm-up on a side stream, as the PyTorch docs require before a capture (autograd and the
        # BLAS/cuDNN handles allocate their workspaces here, outside the graph). It learns: undone below.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # as torch.cuda.make_graphed_callables does
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records the kernels, runs none of them
            self.output = fn(*self.inputs)
        with torch.no_grad():
            torch._foreach_copy_(live, saved)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for captured, new in zip(self.inputs, inputs, strict=True):
            captured.copy_(new)
        self.graph.replay()
        return self.output


def run(
    graphs: dict[Any, Graphed] | None,
    name: str,
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    state: Sequence[torch.Tensor],
) -> torch.Tensor:
    """``fn(*inputs)``, through a graph captured for these input shapes when ``graphs`` (the
    learner's cache) is a dict, else eagerly (``graphs`` None: the device path without graphs).
    ``name`` tells the functions apart in the cache."""
    if graphs is None:
        return fn(*inputs)
    key = (name, *(tuple(t.shape) for t in inputs))
    graphed = graphs.get(key)
    if graphed is None:
        if len(graphs) >= MAX_GRAPHS:
            return fn(*inputs)
        graphed = graphs[key] = Graphed(fn, inputs, state)
    return graphed(*inputs)
