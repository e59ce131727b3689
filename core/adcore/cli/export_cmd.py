"""``adcore export``: a saved model as an ONNX graph, with its parity to the torch model measured."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["export"]


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--format", "format_", default="onnx", show_default=True, type=click.Choice(["onnx"]),
              help="Export format.")
@click.option("--out", default=Path("export"), show_default=True, type=click.Path(path_type=Path),
              help="Export folder: new, empty, or an earlier export (replaced atomically); never the model, "
                   "never a folder adcore did not write.")
@click.option("--images", default=None, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of images to check parity on (its first 8); default: seeded synthetic textures.")
def export(model_dir: Path, format_: str, out: Path, images: Path | None) -> None:
    """Export the model in MODEL_DIR (a run's category folder or its model/) for onnxruntime.

    The graph takes images already resized to the model's working size and returns
    scores and maps; thresholds and settings go to export.json beside it. Export
    fails, writing nothing, if onnxruntime does not score like torch.
    """
    from adcore.export import ONNX_FILE, PARITY_FILE, export_model

    report = export_model(model_dir, out, images)
    sizes = ", ".join(str(run["batch_size"]) for run in report["runs"])
    click.echo(f"Exported to {out / ONNX_FILE} ({report['image_size']} px input, dynamic batch). Parity with "
               f"torch at batch sizes {sizes}: max score difference {report['max_abs_score_diff']:.3g} "
               f"(relative {report['max_rel_score_diff']:.3g}), max map difference "
               f"{report['max_abs_map_diff']:.3g} (relative {report['max_rel_map_diff']:.3g}); "
               f"details in {out / PARITY_FILE}")
