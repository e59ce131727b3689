"""Running the app under uvicorn: loopback by default, a clean stop on SIGTERM or Ctrl-C.

Imported only once :func:`adcore.serve.require_serve_extra` found the web stack.

Why a Server subclass: uvicorn re-raises a caught SIGTERM once it has shut
down, which the CLI would report as an interrupted command; here a stop signal
means "finish the requests in flight, then exit 0", as an orchestrator expects.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
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
    server = _Server(config, echo)
    if not _is_loopback(host):
        echo(f"Warning: listening on {host}, reachable from other machines; adcore serve has no authentication")
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        raise ConfigError(f"cannot listen on {host}:{port} (address in use or not allowed); "
                          "choose another --port or --host") from None
    if failures:
        exc = failures[0]
        if isinstance(exc, AdcoreError):
            raise exc
        raise ModelFileError(f"{model_dir}: the model could not be loaded ({' '.join(str(exc).split())})")
    if server.stopped_by is not None:
        echo(f"Stopped by {signal.Signals(server.stopped_by).name}; requests in flight were answered")


class _Server(uvicorn.Server):
    """A uvicorn Server that announces its address and stops cleanly on a signal."""

    def __init__(self, config: uvicorn.Config, echo: Callable[[str], None]) -> None:
        super().__init__(config)
        self.echo = echo
        self.stopped_by: int | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.echo(f"adcore serve: http://{shown}:{port}/ (POST /predict, GET /healthz /readyz /metrics); "
                      "SIGTERM or Ctrl-C stops it")

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
