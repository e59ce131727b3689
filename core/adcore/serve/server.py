"""Running the app under uvicorn: loopback by default, a clean stop on SIGTERM or Ctrl-C.

Imported only once :func:`adcore.serve.require_serve_extra` found the web stack.

Why a Server subclass: uvicorn re-raises a caught SIGTERM once it has shut
down, which the CLI would report as an interrupted command; here a stop signal
means "finish the requests in flight, then exit 0", as an orchestrator expects.

Why the socket is bound before uvicorn starts: the address (with the port the
system chose for ``--port 0``) is printed from the main thread before the model
starts loading on its own thread, so a supervisor or a test never waits on the
model to learn where the server listens.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from adcore.errors import AdcoreError, ConfigError, ModelFileError
from adcore.export import find_export
from adcore.predicting import find_model, load_engine
from adcore.serve import DEFAULT_MAX_BYTES
from adcore.serve.app import create_app

__all__ = ["STOP_SIGNALS", "run_server"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(model_dir: Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
               device: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               echo: Callable[[str], None] = print) -> None:
    """Serve the model in ``model_dir`` until a stop signal; errors in loading it end the server with them."""
    if engine == "onnx":  # a wrong folder is one line before the port is taken
        find_export(Path(model_dir))
    else:
        find_model(Path(model_dir))
    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    app = create_app(lambda: load_engine(Path(model_dir), engine, device)[:2], engine, max_bytes, failed, echo)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, server_header=False)
    server = _Server(config)
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    echo(f"adcore serve: http://{shown}:{bound_port}/ (POST /predict, GET /healthz /readyz /metrics); "
         "SIGTERM or Ctrl-C stops it")
    if not _is_loopback(host):
        echo(f"Warning: listening on {host}, reachable from other machines; adcore serve has no authentication")
    with sock:
        server.run(sockets=[sock])
    if failures:
        exc = failures[0]
        if isinstance(exc, AdcoreError):
            raise exc
        raise ModelFileError(f"{model_dir}: the model could not be loaded ({' '.join(str(exc).split())})")
    if server.stopped_by is not None:
        echo(f"Stopped by {signal.Signals(server.stopped_by).name}; requests in flight were answered")


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (IPv6 when the host is an IPv6 address); uvicorn listens on it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                          "choose another --port or --host") from None
    return sock


class _Server(uvicorn.Server):
    """A uvicorn Server that stops cleanly on a signal."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: Any) -> None:
        self.stopped_by = sig
        self.handle_exit(sig, frame)
