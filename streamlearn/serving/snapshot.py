"""A consistent model snapshot in shared memory: one writer (the learner), many readers.

Serving from the learner's own process would put every request under the learner's GIL (measured
here: a prediction thread cut training steps by 60-80% at full request rate, and a shared lock
gave p99 of 57-223 ms). So the learner copies its parameters into shared memory every few updates
and a separate server process predicts from its own copy of them. A sequence lock makes each read
all-old or all-new, never a half-updated model: the writer makes the counter odd, writes, makes it
even; a reader retries until it saw the same even counter before and after copying. (Stores and
loads of the aligned int64 counters are not reordered with each other on x86-64 and numpy issues
them in program order; that is what the lock relies on.)

The block also carries two text regions: metadata as JSON (label names, learner, model) and the
learner's Prometheus exposition, so one HTTP port answers predictions and ``/metrics``.

>>> import numpy as np
>>> snap = SharedSnapshot.create(3)
>>> snap.publish(np.array([1, 2, 3], dtype=np.float32), version=7)
>>> out = np.zeros(3, dtype=np.float32)
>>> snap.read(out), out.tolist()
(7, [1.0, 2.0, 3.0])
>>> snap.close()
"""

from __future__ import annotations

import json
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

# header slots (int64); _CKPT_*: "checkpoint now" requests from the server, answers from the learner
_SEQ, _VERSION, _READY, _SEQ_TEXT, _META_LEN, _METRICS_LEN, _N_PARAMS, _PORT = range(8)
_CKPT_REQ, _CKPT_DONE, _CKPT_OK = range(8, 11)
# an operator request rides the same slots: what to do (ACTIONS) and its argument
_CKPT_ACTION, _CKPT_ARG = 11, 12
#: the learner-side actions a request can carry, by code (0: checkpoint, the original request)
ACTIONS = ("checkpoint", "pause", "resume", "promote", "rollback")
_SLOTS = 16
_HEADER = _SLOTS * 8
#: the port slot's value when the server could not bind (0: not listening yet; else its port)
BIND_FAILED = -1
META_CAP = 256 * 1024
METRICS_CAP = 2 * 1024 * 1024


class SharedSnapshot:
    def __init__(self, shm: shared_memory.SharedMemory, n_params: int, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        buf = shm.buf
        self._hdr = np.ndarray((_SLOTS,), dtype=np.int64, buffer=buf, offset=0)
        self._meta = np.ndarray((META_CAP,), dtype=np.uint8, buffer=buf, offset=_HEADER)
        offset = _HEADER + META_CAP
        self._metrics = np.ndarray((METRICS_CAP,), dtype=np.uint8, buffer=buf, offset=offset)
        offset += METRICS_CAP
        self.params = np.ndarray((n_params,), dtype=np.float32, buffer=buf, offset=offset)
        self.n_params = n_params

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, n_params: int) -> SharedSnapshot:
        size = _HEADER + META_CAP + METRICS_CAP + 4 * n_params
        shm = shared_memory.SharedMemory(create=True, size=size)
        snap = cls(shm, n_params, owner=True)
        snap._hdr[:] = 0
        snap._hdr[_VERSION] = -1  # no model published yet
        snap._hdr[_N_PARAMS] = n_params
        return snap

    @classmethod
    def attach(cls, name: str) -> SharedSnapshot:
        try:
            shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # 3.13+
        except TypeError:
            shm = shared_memory.SharedMemory(name=name)
            # Before 3.13 attaching registers the block with *this* process's resource tracker, which
            # unlinks it when this process exits, under the owner's feet. Only the owner unlinks.
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        n = int(np.ndarray((8,), dtype=np.int64, buffer=shm.buf)[_N_PARAMS])
        return cls(shm, n, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        # drop our numpy views first: SharedMemory refuses to close while they exist
        del self._hdr, self._meta, self._metrics, self.params
        self.shm.close()
        if self.owner:
            self.shm.unlink()

    # -- writer side (the learner) ------------------------------------------------------------
    def publish(self, params: np.ndarray | list[np.ndarray], version: int) -> None:
        """Copy the parameters in (one flat array, or the parameter arrays in order)."""
        self._hdr[_SEQ] += 1  # odd: writing
        if isinstance(params, list):
            i = 0
            for p in params:
                n = p.size
                self.params[i : i + n] = p.reshape(-1)
                i += n
        else:
            self.params[:] = params
        self._hdr[_VERSION] = version
        self._hdr[_SEQ] += 1  # even: consistent

    def publish_text(self, meta: dict[str, Any], metrics: bytes) -> None:
        raw = json.dumps(meta).encode()[:META_CAP]
        metrics = metrics[:METRICS_CAP]
        self._hdr[_SEQ_TEXT] += 1
        self._meta[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self._hdr[_META_LEN] = len(raw)
        self._metrics[: len(metrics)] = np.frombuffer(metrics, dtype=np.uint8)
        self._hdr[_METRICS_LEN] = len(metrics)
        self._hdr[_SEQ_TEXT] += 1

    def set_ready(self, ready: bool) -> None:
        self._hdr[_READY] = int(ready)

    # -- the server reports the port it bound (serve.port 0 = any free port) --------------------
    def set_port(self, port: int) -> None:
        self._hdr[_PORT] = port

    @property
    def port(self) -> int:
        return int(self._hdr[_PORT])

    # -- "checkpoint now": the server asks (one writer: it serialises its threads), the learner answers
    def request_checkpoint(self, action: str = "checkpoint", arg: int = 0) -> int:
        """Ask the learner for a checkpoint (or another of ``ACTIONS``, with an integer argument);
        returns the request number to wait for."""
        self._hdr[_CKPT_ACTION] = ACTIONS.index(action)
        self._hdr[_CKPT_ARG] = arg
        self._hdr[_CKPT_REQ] += 1  # last: a learner that sees it also sees the action
        return int(self._hdr[_CKPT_REQ])

    def requested_action(self) -> tuple[str, int]:
        """The action and argument of the pending request (read after ``checkpoint_requested``)."""
        return ACTIONS[int(self._hdr[_CKPT_ACTION])], int(self._hdr[_CKPT_ARG])

    def checkpoint_requested(self) -> int:
        """The newest request number if the learner has not answered it yet, else 0."""
        req = int(self._hdr[_CKPT_REQ])
        return req if req > int(self._hdr[_CKPT_DONE]) else 0

    def answer_checkpoint(self, request: int, ok: bool) -> None:
        self._hdr[_CKPT_OK] = int(ok)
        self._hdr[_CKPT_DONE] = request  # last: a reader that sees it also sees the result

    def checkpoint_answer(self, request: int) -> bool | None:
        """None while request ``request`` is unanswered; then whether the checkpoint was written."""
        if int(self._hdr[_CKPT_DONE]) < request:
            return None
        return bool(self._hdr[_CKPT_OK])

    # -- reader side (servers) ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self._hdr[_READY]) and int(self._hdr[_VERSION]) >= 0

    @property
    def version(self) -> int:
        """The published version, read without copying (cheap: checked on every request)."""
        return int(self._hdr[_VERSION])

    def read(self, out: np.ndarray) -> int:
        """Copy a consistent snapshot into ``out``; returns its version (-1: none yet)."""
        while True:
            s1 = int(self._hdr[_SEQ])
            if s1 % 2:
                time.sleep(0)
                continue
            out[:] = self.params
            version = int(self._hdr[_VERSION])
            if int(self._hdr[_SEQ]) == s1:
                return version

    def read_text(self, *, metrics: bool = True) -> tuple[dict[str, Any], bytes]:
        """Consistent metadata and (unless ``metrics=False``) the metrics text."""
        while True:
            s1 = int(self._hdr[_SEQ_TEXT])
            if s1 % 2:
                time.sleep(0)
                continue
            meta_raw = self._meta[: int(self._hdr[_META_LEN])].tobytes()
            text = self._metrics[: int(self._hdr[_METRICS_LEN])].tobytes() if metrics else b""
            if int(self._hdr[_SEQ_TEXT]) == s1:
                return (json.loads(meta_raw) if meta_raw else {}), text

    def read_meta(self) -> dict[str, Any]:
        return self.read_text(metrics=False)[0]
