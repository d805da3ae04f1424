"""What ``demo`` and ``run`` tell a person at a terminal: the status line, where to look, a summary.

Text only: :class:`streamlearn.logs.StatusLine` decides how it reaches the terminal. Nothing here
imports torch, so the functions are cheap to test.
"""

from __future__ import annotations

from typing import Any

from streamlearn.config import Config

#: serve.host values that listen everywhere: the URL a person opens on this machine is the loopback
_ANY_HOST = {"", "0.0.0.0", "::", "[::]"}


def status_text(s: dict[str, Any], prefix: str = "[demo]") -> str:
    """One status line from a progress report (``Daemon._report``'s dict).

    ``learned`` is the model's lifetime total (restored from the checkpoint), as exported by
    streamlearn_model_examples_learned, not this process's examples_learned_total.

    >>> status_text({"learned": 700, "examples_per_s": 350.0, "prequential_accuracy": 0.81,
    ...              "rolling_accuracy": 0.9, "rejected": 0, "lag": 11})
    '[demo] learned 700  350.0 ex/s  prequential acc 0.810  rolling 0.900  rejected 0  lag 11'
    """
    return (
        f"{prefix} learned {s['learned']}  {s['examples_per_s']:.1f} ex/s  "
        f"prequential acc {s['prequential_accuracy']:.3f}  rolling {s['rolling_accuracy']:.3f}  "
        f"rejected {s['rejected']}  lag {s.get('lag', 0)}"
    )


def base_url(host: str, port: int) -> str:
    """The address to open for a server listening on ``host``:``port``.

    >>> base_url("0.0.0.0", 8080), base_url("::1", 9000), base_url("10.0.0.5", 80)
    ('http://127.0.0.1:8080', 'http://[::1]:9000', 'http://10.0.0.5:80')
    """
    if host in _ANY_HOST:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def where_to_look(cfg: Config, port: int) -> list[str]:
    """The lines printed once the demo serves: the page, /metrics and a ``curl`` for /predict.

    The token itself is never printed (it would end up in logs): the curl names a variable."""
    url = base_url(cfg.serve.host, port)
    auth = ' -H "Authorization: Bearer $STREAMLEARN_TOKEN"' if cfg.serve.auth_token else ""
    zeros = f'$(python3 -c \'print(",".join(["0"] * {cfg.model.n_inputs}))\')'
    return [
        f"open   {url}/          the live page",
        f"       {url}/metrics   Prometheus metrics",
        f'try    curl -s {url}/predict{auth} -d "{{\\"x\\": [{zeros}]}}"',
    ]


def summary_text(summary: dict[str, Any], *, verb: str = "demo", stopped_by: str | None = None) -> str:
    """The few lines printed when ``demo``/``run`` ends (at ``--max-examples``, or on Ctrl-C).

    ``summary`` is ``Daemon.summary()`` plus ``checkpoint`` (the newest one's path, or None) and
    ``checkpoint_temporary`` (the demo's own directory, removed at exit)."""
    how = f"stopped ({stopped_by})" if stopped_by else "finished"
    ckpt = summary.get("checkpoint")
    where = ckpt or "none written"
    if ckpt and summary.get("checkpoint_temporary"):
        where += " (temporary, removed at exit: --set checkpoint.dir=DIR keeps it)"
    return "\n".join(
        [
            f"streamlearn {verb} {how}: {summary['learner']}",
            f"  learned      {summary['learned']} examples ({summary['examples_per_s']:.1f} ex/s)",
            f"  accuracy     {summary['prequential_accuracy']:.4f} prequential, "
            f"{summary['rolling_accuracy']:.4f} rolling",
            f"  rejected     {summary['rejected']}",
            f"  checkpoints  {summary['checkpoints']} written, newest: {where}",
        ]
    )
