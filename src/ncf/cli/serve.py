"""`ncf serve RUN`: the HTTP API and the web page of a trained run."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ncf.cli import int_in, positive_int
from ncf.errors import NcfError


def register(sub: Any) -> None:
    """Add `ncf serve` to the top-level parser."""
    p = sub.add_parser(
        "serve", help="serve a trained run: HTTP API (OpenAPI page at /docs) and a web page",
        description="Loads every model of RUN (pickle-free) and serves recommendations for "
        "known users, new users folded in from the items they give, similar items and title "
        "search, with a web page at /. Ctrl-C or SIGTERM stops it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN", help="a run directory of `ncf train`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this "
                   "machine only)")
    p.add_argument("--port", type=int_in(0, 65535, "a port"), default=8000,
                   help="port to bind (0: any free port)")
    p.add_argument("--model", default=None, help="default model of requests that name none "
                   "(default: neumf when the run has it)")
    p.add_argument("--workers", type=int_in(1, 64, "a number of processes"), default=1,
                   help="server processes sharing the port, each with its own copy of the "
                   "models (more cores, more memory)")
    p.add_argument("--slots", type=positive_int, default=None,
                   help="fold-ins computed at once per process, others wait (default: the "
                   "cores divided among the workers; top-K of known users, similar items and "
                   "search run on the event loop)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads per request (requests already run in parallel)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (info: one line per request)")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ncf.serve.app import bound_allocator_caches, create_app
    except ImportError as exc:
        raise NcfError(f"ncf serve needs the serve extra ({exc.name} is missing): pip install "
                       "'ncf[serve]'") from None
    import torch

    from ncf.serve.service import Service

    torch.set_num_threads(args.threads)
    bound_allocator_caches()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    slots = args.slots or max(1, (cores or 1) // args.workers)
    service = Service(args.run_dir, default_model=args.model, compute_slots=slots)
    from ncf.serve.workers import Workers, balanced, listen

    per_worker = args.workers > 1 and balanced()  # a socket of its own for each worker
    socks = listen(args.host, args.port, args.workers if per_worker else 1)
    port = socks[0].getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    options: dict[str, Any] = {"log_level": args.log_level, "timeout_graceful_shutdown": 5,
                               "access_log": args.log_level in ("info", "debug")}
    env = dict(NCF_SERVE_RUN=str(Path(args.run_dir).resolve()),
               NCF_SERVE_MODEL=service.default_model,
               NCF_SERVE_THREADS=str(args.threads), NCF_SERVE_SLOTS=str(slots))
    info = service.info()
    server: Any = None
    workers: Workers | None = None
    if per_worker:  # each worker process loads the run itself (checked above)
        workers = Workers(socks, options, env)
        del service  # the workers hold the models; this process only watches them
        gc.collect()
    elif args.workers > 1:  # one socket shared by the workers, under uvicorn's supervisor
        os.environ.update(env)
        config = uvicorn.Config("ncf.serve.app:from_environment", factory=True,
                                workers=args.workers, **options)
        server = uvicorn.Server(config)
    else:
        server = uvicorn.Server(uvicorn.Config(create_app(service), **options))

    def stop(signum: int, frame: object) -> None:
        if workers is not None:
            workers.stop()
        else:
            server.should_exit = True

    # Until uvicorn takes the signals over (and after it hands them back, once it has shut
    # down gracefully), SIGINT and SIGTERM just ask the server to stop: the command then ends
    # normally, whenever the signal came.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    detail = f"; {args.workers} worker processes" if args.workers > 1 else ""
    names = ", ".join(m["name"] for m in info["models"])
    print(f"ncf serve: http://{host}:{port}/  ({info['users']:,} users, {info['items']:,} "
          f"items; models {names}, default {info['default_model']}{detail}; "
          f"API docs at /docs; loaded in {info['load_seconds']:.1f}s; Ctrl-C stops)",
          flush=True)
    try:
        if workers is not None:
            workers.run()
        elif args.workers > 1:
            import inspect

            from uvicorn.supervisors import Multiprocess

            extra = {"target": server.run} if "target" in inspect.signature(
                Multiprocess).parameters else {}  # uvicorn before 0.30 takes the target
            Multiprocess(server.config, sockets=socks, **extra).run()
        else:
            server.run(sockets=socks)
    finally:
        for sock in socks:
            sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("ncf serve: stopped", file=sys.stderr, flush=True)
    return 0
