"""A learner step captured once as a CUDA graph and replayed: one launch instead of ~250 small ones.

Why: on a GPU, DrQ-v2's update at the paper size was bound by the host (docs/benchmarks.md, "On a
GPU"). Python, autograd and the CUDA runtime took 14 ms to issue about 250 small kernels that
kept the GPU busy for 6 ms. A CUDA graph records those launches once; each replay is one call.

What a step must be for this (torch docs, "CUDA Graphs", whole-network capture):
- a function of a tree (nested dicts) of tensors and floats returning a tree of tensors. Its
  inputs live at fixed addresses: :class:`GraphedStep` keeps a device copy of each input and
  copies each call's values into it (without waiting, when the host arrays are pinned);
- no random draws inside (the caller draws and passes them in), no host sync (no ``.item()``,
  no Python branch on a tensor's value), the same shapes on every call;
- optimizers built with ``capturable=True``, so Adam's step count lives on the device;
- a few eager calls first, on the stream the capture then uses, so lazily made state exists
  before the capture: Adam's moments, cuBLAS handles, cuDNN's algorithm choices.

The warm-up calls are real steps, not throw-away ones. Capturing records without running, so the
call that captures then replays once: no step is lost or repeated. A call whose inputs differ in
structure, shape or dtype from the captured ones runs eagerly, as does every call after a failed
capture. The reason is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Union

import torch

__all__ = ["GraphedStep", "Tree", "tree_to_device"]

log = logging.getLogger(__name__)

#: a step's inputs or outputs: tensors and floats in nested dicts with string keys
Tree = dict[str, Union["Tree", torch.Tensor, float]]


def tree_to_device(tree: Tree, device: torch.device) -> Tree:
    """The same tree with each tensor on ``device`` (floats kept; non-blocking from pinned memory)."""
    return {k: tree_to_device(v, device) if isinstance(v, dict)
            else v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in tree.items()}


def _signature(tree: Tree) -> tuple:
    """What a captured graph depends on: keys, and each tensor's shape and dtype."""
    return tuple((k, _signature(v) if isinstance(v, dict)
                  else (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else float)
                 for k, v in sorted(tree.items()))


def _static_like(tree: Tree, device: torch.device) -> Tree:
    """Device buffers for a tree: a tensor's shape and dtype; a float as a 0-dim float32 tensor."""
    return {k: _static_like(v, device) if isinstance(v, dict)
            else torch.empty(v.shape, dtype=v.dtype, device=device) if isinstance(v, torch.Tensor)
            else torch.zeros((), dtype=torch.float32, device=device)
            for k, v in tree.items()}


def _copy_into(static: Tree, tree: Tree) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _copy_into(static[k], v)
        elif isinstance(v, torch.Tensor):
            static[k].copy_(v, non_blocking=True)
        else:
            static[k].fill_(v)


class GraphedStep:
    """``fn`` run eagerly ``warmup`` times, then captured as a CUDA graph and replayed.

    Calling it returns ``(outputs, inputs)``: ``inputs`` is the tree as the step saw it on the
    device, for a later step that reads the same batch. After a replay both are the graph's
    static tensors, which the next replay overwrites: read or copy them before calling again.
    """

    def __init__(self, fn: Callable[[Tree], Tree], device: torch.device, name: str, warmup: int = 3):
        self.fn, self.device, self.name, self.warmup = fn, device, name, warmup
        self.calls = 0
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.signature: tuple | None = None
        self.static_inputs: Tree = {}
        self.static_outputs: Tree = {}
        self._warned: set[str] = set()

    def _note_once(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("cuda_graph %s: running eagerly: %s", self.name, reason)

    def _eager(self, inputs: Tree) -> tuple[Tree, Tree]:
        """One eager call on the capture stream (so warm-up state is made where capture reads it)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            on_device = tree_to_device(inputs, self.device)
            out = self.fn(on_device)
        current.wait_stream(self.stream)
        return out, on_device

    def _capture(self, inputs: Tree) -> None:
        self.static_inputs = _static_like(inputs, self.device)
        _copy_into(self.static_inputs, inputs)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA work during the capture (the background learner's
        # acting thread, se_robot.train_async) neither joins nor breaks it.
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self.static_outputs = self.fn(self.static_inputs)
        self.graph = graph

    def __call__(self, inputs: Tree) -> tuple[Tree, Tree]:
        if self.failed:
            return self._eager(inputs)
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            return self._eager(inputs)
        signature = _signature(inputs)
        if self.graph is None:
            try:
                self._capture(inputs)
            except RuntimeError as e:   # an op that cannot be captured (a host sync, an unsupported kernel)
                # Capturing runs no device work, so the step has not happened: run it eagerly.
                self.failed = True
                self._note_once(f"capture failed ({type(e).__name__}: {e})")
                return self._eager(inputs)
            self.signature = signature
        elif signature != self.signature:
            self._note_once("inputs differ in keys, shapes or dtypes from the captured ones")
            return self._eager(inputs)
        else:
            _copy_into(self.static_inputs, inputs)
        self.graph.replay()
        return self.static_outputs, self.static_inputs
