"""``sas serve``: run the OpenAI-compatible steering server (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import os
import sys


def _named_path(s: str) -> tuple[str, str]:
    name, sep, path = s.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. sentiment=vectors/sentiment.safetensors), got {s!r}")
    return name, path


def cmd_serve(args) -> None:
    try:
        import uvicorn
    except ImportError:
        sys.exit('sas serve needs the serve extra: pip install -e ".[serve]"')
    import torch

    from ..load.models import load_model
    from .app import LOOPBACK, Limits, make_app
    from .vectors import VectorError, read_vector

    if args.host not in LOOPBACK and not (args.api_key or os.environ.get("SAS_API_KEY")):
        print(f"warning: serving on {args.host} without an API key: anyone who can reach it can use it",
              file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, dtype=args.dtype)
    vectors, saes = {}, {}
    for name, path in args.vector:
        try:
            vectors[name] = read_vector(path, model, saes)
        except VectorError as e:
            sys.exit(f"sas serve: --vector {name}={path}: {e}")
    limits = Limits(max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, max_batch=args.max_batch,
                    max_vectors=args.max_vectors, window_ms=args.batch_window_ms)
    hosts = list(args.allowed_host)
    if args.host not in LOOPBACK + ("0.0.0.0", "::"):  # bound to one address: clients may name it
        hosts.append(args.host)
    app = make_app(model, vectors, args.vectors_dir, args.api_key or os.environ.get("SAS_API_KEY"), limits,
                   admin_key=args.admin_key or os.environ.get("SAS_ADMIN_KEY"), allowed_hosts=hosts)
    print(f"sas serve: {model.cfg.model_name} on http://{args.host}:{args.port}/v1 ({len(vectors)} vector(s) "
          f"registered, files from {args.vectors_dir or 'nowhere'})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``sas serve`` on the ``sub`` subparsers of the ``sas`` command."""
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server that steers per request",
                       description="Serve /v1/completions, /v1/chat/completions, /v1/models and /v1/vectors. "
                                   'Requests steer with "steer": [{"vector": NAME, "strength": 4, "layers": [6]}].')
    s.add_argument("--model", default="gemma-3-270m")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--vector", type=_named_path, action="append", default=[], metavar="NAME=PATH",
                   help="register a saved vector file under NAME, read-only (repeatable)")
    s.add_argument("--vectors-dir", default=None, metavar="DIR",
                   help="let requests and POST /v1/vectors load saved vector files under DIR")
    s.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY (default: $SAS_API_KEY)")
    s.add_argument("--admin-key", default=None,
                   help="the key POST and DELETE /v1/vectors need (default: $SAS_ADMIN_KEY, else the API key; "
                        "with neither, clients cannot change the vectors)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="answer requests whose Host header is NAME, besides localhost, 127.0.0.1 and ::1 "
                        "(repeatable; * for any)")
    s.add_argument("--max-tokens", type=int, default=256, help="most new tokens per request")
    s.add_argument("--max-prompt-tokens", type=int, default=2048)
    s.add_argument("--max-batch", type=int, default=16, help="most rows generated together")
    s.add_argument("--max-vectors", type=int, default=4, help="most steering terms per request")
    s.add_argument("--batch-window-ms", type=float, default=50.0,
                   help="how long to wait for another request to batch with (at most 5 windows)")
    s.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    s.add_argument("--log-level", default="info")
    s.set_defaults(fn=cmd_serve)
    return s
