"""What a prediction server needs to know about its model and its limits, from the config once."""

from __future__ import annotations

from dataclasses import dataclass

from streamlearn.config import ModelConfig, ServeConfig


@dataclass
class ServerSettings:
    """The fixed facts a prediction server answers by: built once at start, never changed after.

    The model's shape (``n_inputs``, ``n_classes``) decides what a request must hold and what the
    OpenAPI document promises; ``model_name`` is the only name the ``/v2/models/{name}`` paths
    answer; ``learner`` is reported (``platform``, ``streamlearn_build_info``), never used to
    predict. The limits are enforced before any model code runs:

    - ``max_request_bytes``: a larger ``Content-Length`` is answered 413 without reading the body;
    - ``max_rows``: more rows in one request are answered 413;
    - ``max_connections``: open connections at most; at the cap the one that has waited longest
      for a request (one still arriving or never sent first, an idle keep-alive one last) is
      closed to make room; when all are being answered a new one waits up to
      ``request_timeout_seconds``, then 503. A connection holds a thread only while answered;
    - ``request_timeout_seconds``: each request must arrive in full (request line, headers, body)
      within this many seconds of the server starting to wait for it, or the connection is
      closed (408 if part of it came); an idle keep-alive connection is closed after as long.

    ``auth_token``: when set, predictions need ``Authorization: Bearer <token>``; the admin
    action needs it always (none set: 403).

    Build it with :meth:`from_config`; tests may construct it directly.
    """

    model_name: str
    learner: str
    n_inputs: int
    n_classes: int
    max_request_bytes: int
    max_rows: int
    auth_token: str | None = None
    max_connections: int = 128
    request_timeout_seconds: float = 10.0

    @classmethod
    def from_config(cls, serve: ServeConfig, model: ModelConfig, learner: str) -> ServerSettings:
        """The settings of a server for ``model`` learned by ``learner`` (its config name)."""
        return cls(
            model_name=serve.model_name,
            learner=learner,
            n_inputs=model.n_inputs,
            n_classes=model.n_classes,
            max_request_bytes=serve.max_request_bytes,
            max_rows=serve.max_rows,
            auth_token=serve.auth_token,
            max_connections=serve.max_connections,
            request_timeout_seconds=serve.request_timeout_seconds,
        )
