"""`cpcl serve`: the search page and JSON API over an index (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from cpcl.cli.search import search_arguments
from cpcl.web.config import LOOPBACK_HOSTS, WebConfig

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve a search page and JSON API over an index")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: this machine only; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("-k", type=int, default=WebConfig.default_k,
                       help="results a query returns when it does not say (default: %(default)s)")
    serve.add_argument("--min-score", type=float, default=WebConfig.min_score,
                       help="the page's starting score threshold (default: %(default)s)")
    search_arguments(serve, "start the page with its re-ranking switch on (a request may say otherwise)")
    serve.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or the name localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    from cpcl.cli.evaluate import rerank_config
    from cpcl.index.search import Searcher
    from cpcl.utils.errors import CpclError
    from cpcl.web.app import create_app
    from cpcl.web.server import serve
    from cpcl.web.limits import MAX_K

    if not 1 <= args.k <= MAX_K:
        raise CpclError(f"-k must be between 1 and {MAX_K}, got {args.k}")
    if not 0 < args.port < 65536:
        raise CpclError(f"--port must be between 1 and 65535, got {args.port}")
    loopback = is_loopback(args.host)
    if not loopback:
        log.warning("listening on %s: anyone who can reach this machine can search the gallery and see its images",
                    args.host)
    config = WebConfig(default_k=args.k, min_score=args.min_score, rerank=args.rerank,
                       allowed_hosts=LOOPBACK_HOSTS if loopback else ("*",))
    with Searcher.open(args.index, args.checkpoint, args.device, args.precision, rerank=rerank_config(args)) \
            as searcher:
        print(f"serving {searcher.count} images of {searcher.root} at http://{args.host}:{args.port}/ "
              f"(API description: /docs, /openapi.json); Ctrl-C stops", flush=True)
        serve(create_app(searcher, config), args.host, args.port, config)
    return 0
