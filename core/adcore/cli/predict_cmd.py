"""``adcore predict``: score new images with a saved model."""

from __future__ import annotations

from pathlib import Path

import click

from adcore.cli.executor_options import executor_options, where_to_run


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", default=Path("predictions"), show_default=True, type=click.Path(path_type=Path),
              help="Results folder: new, empty, or an earlier prediction (replaced atomically); never an input, "
                   "never a folder adcore did not write.")
@click.option("--device", default="auto", show_default=True, metavar="cpu|cuda[:N]|mps|auto",
              help="Device to predict on, whatever the model was trained on (auto: a GPU when there is one).")
@click.option("--engine", default="torch", show_default=True, type=click.Choice(["torch", "onnx"]),
              help="torch: the saved model; onnx: MODEL_DIR is an export folder of adcore export, run by "
                   "onnxruntime on the CPU (same inputs, outputs and files).")
@executor_options
def predict(model_dir: Path, inputs: tuple[Path, ...], out: Path, device: str, engine: str, executor: str,
            jobs: int | None, address: str | None, worker_cpus: float, worker_memory: float | None) -> None:
    """Score images (files or folders) with the model in MODEL_DIR (a run's category folder or its model/).

    With --jobs N or --executor ray the batches are scored by workers that
    each load the model once; the outputs are the same as in one process.
    """
    from adcore.config import resolve_device
    from adcore.predicting import predict_files

    device = resolve_device(device)
    rows = predict_files(model_dir, inputs, out, device, engine,
                         where_to_run(executor, jobs, address, worker_cpus, worker_memory, device))
    flagged = sum(1 for row in rows if row["anomalous"])
    click.echo(f"{len(rows)} images, {flagged} anomalous; heat maps, masks and predictions.csv in {out}/")
