"""`gymwire view PATH...`: the trajectory viewer's command (a `gymwire.commands` plugin)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import webbrowser
from typing import Any

from gymwire.sdk.errors import port_number

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open a local web page over training runs, eval outputs and episode JSONL files",
        description=(
            "Serve a page showing runs and their configs, learning curves, eval tables, an episode browser "
            "and each episode turn by turn; it follows runs that are still training. See docs/viewer.md."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a training run directory, a folder of runs, an eval output or a JSONL file")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8777, help="port (default 8777; 0 picks a free one)")
    parser.add_argument("--tokenizer", help="tokenizer folder for the token view (default: found in the run)")
    parser.add_argument("--no-browser", action="store_true", help="print the address only; do not open a browser")
    parser.set_defaults(handler=_view)


def _view(args: argparse.Namespace) -> int:
    try:
        from .index import Catalog, ViewError, find_runs
        from .server import make_app
    except ImportError as exc:
        print(f"gymwire view: {exc.name} is missing: pip install 'gymwire[view]'", file=sys.stderr)
        return 2
    try:
        catalog = Catalog(find_runs(args.paths))
    except ViewError as exc:
        print(f"gymwire view: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(make_app(catalog, tokenizer=args.tokenizer, host=args.host), [run.name for run in catalog.runs], args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"gymwire view: cannot listen on {args.host}:{args.port}: {exc}; choose another --port", file=sys.stderr)
        return 1
    return 0


async def _serve(app: Any, names: list[str], args: argparse.Namespace) -> None:
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        port = runner.addresses[0][1]  # the real one when --port 0
        url = f"http://{args.host}:{port}/"
        print(f"gymwire view: {', '.join(names)} at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
