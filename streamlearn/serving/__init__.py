"""Predictions while learning, and from checkpoints.

``snapshot`` (shared-memory model + metrics text, sequence lock) → ``server_process`` (the daemon's
HTTP server in its own process) / ``replica`` (``streamlearn serve``: newest checkpoint, hot reload)
→ ``http`` (routing, limits, auth, request metrics) → ``api`` (request/response bodies) →
``predictor`` (immutable model views). ``publisher`` is the learner's side.
"""
