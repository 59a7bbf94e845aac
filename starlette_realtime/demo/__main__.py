"""Run the chat demo: ``python -m starlette_realtime.demo [--host H] [--port P] [--backend URL]``.

``--socketio-client PATH/TO/socket.io.min.js`` (or ``STARLETTE_REALTIME_DEMO_SOCKETIO_CLIENT``) lets the
page run on the official socket.io-client instead of our browser client (its ``?wire=socketio`` switch).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Sequence

from ..server import run
from .app import create_app


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve the demo until SIGINT/SIGTERM (then drain gracefully)."""
    parser = argparse.ArgumentParser(prog="python -m starlette_realtime.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--backend", default="memory://", help="memory:// (default) or redis://host:6379/0")
    parser.add_argument("--history", type=int, default=50, help="messages kept per room (default 50)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--dashboard", action="store_true", help="serve the dashboard at /dashboard/ (loopback only)")
    parser.add_argument(
        "--socketio-client", metavar="PATH", default=os.environ.get("STARLETTE_REALTIME_DEMO_SOCKETIO_CLIENT") or None,
        help="socket.io-client's browser bundle (the npm package's dist/socket.io.min.js): the page can then switch "
        "to it (default: $STARLETTE_REALTIME_DEMO_SOCKETIO_CLIENT)",
    )
    args = parser.parse_args(argv)
    if args.socketio_client is not None and not os.path.isfile(args.socketio_client):
        parser.error(f"--socketio-client: no file {args.socketio_client} (npm install socket.io-client, then give "
                     "node_modules/socket.io-client/dist/socket.io.min.js)")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Nodes of one cluster (a redis:// backend) must share the key that signs tokens and sessions.
    secret = os.environ.get("STARLETTE_REALTIME_DEMO_SECRET") or None
    app, realtime = create_app(backend=args.backend, secret_key=secret, history=args.history, dashboard=args.dashboard,
                               socketio_client=args.socketio_client)
    print(f"starlette-realtime chat demo on http://{args.host}:{args.port}/ (backend {args.backend})", flush=True)
    if args.socketio_client:
        page = f"http://{args.host}:{args.port}/?wire=socketio"
        print(f"the page on socket.io-client ({args.socketio_client}): {page}", flush=True)
    # uvicorn re-raises the SIGINT it drained on: Ctrl-C is the normal way to stop the demo.
    with contextlib.suppress(KeyboardInterrupt):
        run(app, routers=[realtime], host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
