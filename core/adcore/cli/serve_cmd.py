"""``adcore serve``: a model behind HTTP (predict, health, readiness, metrics, a page to try it)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["serve"]


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; loopback unless told otherwise (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at startup).")
@click.option("--engine", default="torch", show_default=True, type=click.Choice(["torch", "onnx"]),
              help="torch: MODEL_DIR is a saved model; onnx: an export folder of adcore export.")
@click.option("--device", default="auto", show_default=True, metavar="cpu|cuda[:N]|mps|auto",
              help="Device of the torch engine (auto: a GPU when there is one).")
@click.option("--max-mb", default=32.0, show_default=True, type=click.FloatRange(0.001, 4096),
              help="Largest request body accepted, in MB (larger ones get 413).")
def serve(model_dir: Path, host: str, port: int, engine: str, device: str, max_mb: float) -> None:
    """Serve the model in MODEL_DIR: POST /predict, GET /healthz, /readyz, /metrics, and a page at /."""
    from adcore.config import resolve_device
    from adcore.serve import serve as run

    run(model_dir, host, port, engine, resolve_device(device), int(max_mb * 2**20), click.echo)
