"""The worker processes of ``ncf serve --workers N``, each with a listening socket of its own.

When workers share one listening socket, the first to wake takes every connection waiting
in the queue (asyncio and uvloop accept in a loop), so a burst of keep-alive connections
lands on one process while the others idle: with two workers, half the machine. On Linux
each worker gets a socket of its own instead, all bound to one address with
``SO_REUSEPORT``, and the kernel spreads new connections over them (by a hash of the
client's address and port). The sockets listen before the URL is printed, so a connection
made while a worker is still loading waits in its socket's queue. Elsewhere the workers
share one socket under uvicorn's supervisor.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from ncf.errors import NcfError

#: exit status of a worker whose server never started (the parent then stops)
STARTUP_FAILURE = 3
#: restarts of crashed workers allowed per minute before the service gives up
MAX_RESTARTS = 5


def balanced() -> bool:
    """Whether this system spreads connections over sockets of one address (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listen(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` (port 0: a free one, the same for all).

    More than one socket is bound with ``SO_REUSEPORT``, after a plain bind of the address
    checked that nobody listens there: a socket of another program that also asked for
    ``SO_REUSEPORT`` would otherwise silently share the connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []

    def bound(port: int, reuse_port: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        socks.append(sock)  # closed below if anything fails
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        return sock

    try:
        probe = bound(port, reuse_port=False)
        if count > 1:
            port = probe.getsockname()[1]
            socks.pop().close()
            for _ in range(count):
                bound(port, reuse_port=True)
        for sock in socks:
            sock.listen(2048)  # connections wait in the backlog until a server accepts
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise NcfError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return socks


def _worker(sock: socket.socket, options: dict[str, Any], env: dict[str, str]) -> None:
    """One worker process: the app of :func:`ncf.serve.app.from_environment` on ``sock``."""
    import uvicorn

    os.environ.update(env)
    # Ctrl-C reaches every process of the terminal; the parent stops the workers with
    # SIGTERM, so a worker ignores SIGINT outside uvicorn's own handling of it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = uvicorn.Config("ncf.serve.app:from_environment", factory=True, **options)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class Workers:
    """Worker processes, one per socket, restarted when one dies; :meth:`stop` ends them.

    Args:
        sockets: listening sockets (:func:`listen`), one per worker.
        options: keyword arguments of ``uvicorn.Config`` besides the app.
        env: environment of the workers (``NCF_SERVE_*``, read by the app factory).
    """

    def __init__(self, sockets: list[socket.socket], options: dict[str, Any],
                 env: dict[str, str]) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no copy of the parent's threads
        self.sockets, self.options, self.env = sockets, options, env
        self.processes: list[Any] = []
        self._stopping = threading.Event()
        self._restarts: list[float] = []

    def _start(self, index: int) -> Any:
        proc = self._ctx.Process(target=_worker, args=(self.sockets[index], self.options,
                                                       self.env), daemon=False)
        proc.start()
        return proc

    def stop(self) -> None:
        """Ask :meth:`run` to stop the workers and return (safe in a signal handler)."""
        self._stopping.set()

    def run(self) -> None:
        """Start the workers and keep them running until :meth:`stop`; raises
        :class:`NcfError` when a worker cannot start or they keep dying."""
        self.processes = [self._start(i) for i in range(len(self.sockets))]
        try:
            while not self._stopping.wait(0.2):
                for i, proc in enumerate(self.processes):
                    if proc.is_alive() or self._stopping.is_set():
                        continue
                    proc.join()
                    if proc.exitcode == STARTUP_FAILURE:
                        raise NcfError(f"a worker process (pid {proc.pid}) failed to start; "
                                       "run with --workers 1 to see why")
                    now = time.monotonic()
                    self._restarts = [t for t in self._restarts if now - t < 60] + [now]
                    if len(self._restarts) > MAX_RESTARTS:
                        raise NcfError(f"worker processes keep dying ({MAX_RESTARTS} restarts "
                                       f"in a minute; the last exit status {proc.exitcode})")
                    print(f"ncf serve: worker pid {proc.pid} died (exit status "
                          f"{proc.exitcode}); starting another", file=sys.stderr, flush=True)
                    self.processes[i] = self._start(i)
        finally:
            self._terminate()

    def _terminate(self, grace: float = 15.0) -> None:
        for proc in self.processes:
            if proc.is_alive() and proc.pid is not None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)  # uvicorn's graceful shutdown
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.processes:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
