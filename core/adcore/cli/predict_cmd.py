"""``adcore predict``: score new images with a saved model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", default=Path("predictions"), show_default=True, type=click.Path(path_type=Path),
              help="Results folder: new, empty, or an earlier prediction (replaced atomically); never an input, "
                   "never a folder adcore did not write.")
def predict(model_dir: Path, inputs: tuple[Path, ...], out: Path) -> None:
    """Score images (files or folders) with the model in MODEL_DIR (a run's category folder or its model/)."""
    from adcore.predicting import predict_files

    rows = predict_files(model_dir, inputs, out)
    flagged = sum(1 for row in rows if row["anomalous"])
    click.echo(f"{len(rows)} images, {flagged} anomalous; heat maps, masks and predictions.csv in {out}/")
