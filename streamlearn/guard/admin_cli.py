"""``streamlearn admin``: the operator's controls from a shell, over the learner's HTTP endpoints.

``streamlearn admin pause|resume|promote|rollback [CHECKPOINT]`` posts to
``/v2/admin/<action>`` of the daemon's server (``--url``) with the bearer token (``--token`` or
``STREAMLEARN_AUTH_TOKEN``), prints the answer and exits 0 on success, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

ACTIONS = ("pause", "resume", "promote", "rollback", "checkpoint")


def add_admin(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "admin",
        help="operator controls of a running daemon: pause, resume, promote, rollback, checkpoint",
        description="Pause or resume learning, promote the learning model now, roll back to the served "
        "champion (quarantining what was learned since) or to a named checkpoint, or checkpoint now. "
        "Needs the daemon's serve.auth_token.",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("checkpoint", nargs="?", help="rollback only: a checkpoint file name ckpt-...-....slc")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the daemon's server (default %(default)s)")
    p.add_argument(
        "--token",
        default=os.environ.get("STREAMLEARN_AUTH_TOKEN"),
        help="bearer token (default: $STREAMLEARN_AUTH_TOKEN)",
    )
    p.set_defaults(func=run_admin)


def run_admin(args: argparse.Namespace) -> int:
    body = json.dumps({"checkpoint": args.checkpoint} if args.checkpoint else {}).encode()
    req = urllib.request.Request(f"{args.url.rstrip('/')}/v2/admin/{args.action}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if args.token:
        req.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode()}", file=sys.stderr)
    except OSError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
    return 1
