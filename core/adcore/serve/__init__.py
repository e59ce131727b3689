"""``adcore serve``: a saved model (torch) or an ONNX export behind HTTP, with health, metrics and a page.

The web stack is the optional extra ``pip install adcore[serve]`` (Starlette,
uvicorn, prometheus-client, python-multipart); it is imported only here, when
a server starts, so the rest of adcore never needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adcore.errors import ConfigError

__all__ = ["DEFAULT_MAX_BYTES", "require_serve_extra", "serve"]

#: Largest request body accepted by default (bytes): far above a camera's PNG, far below what hurts a server.
DEFAULT_MAX_BYTES = 32 * 2**20
_EXTRA = ("starlette", "uvicorn", "prometheus_client", "multipart")


def require_serve_extra() -> None:
    """Import check of the web stack, or one line saying how to install it."""
    for module in _EXTRA:
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"adcore serve needs {module}: pip install adcore[serve]") from None


def serve(model_dir: Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
          device: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
          echo: Callable[[str], None] = print) -> None:
    """Serve ``model_dir`` (a model, or an export folder with engine "onnx") until SIGTERM or Ctrl-C."""
    require_serve_extra()
    from adcore.serve.server import run_server

    run_server(Path(model_dir), host, port, engine, device, max_bytes, echo)
