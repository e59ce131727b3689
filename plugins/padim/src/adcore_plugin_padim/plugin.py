"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("padim", "adcore_plugin_padim.detector:PaDiM",
             description="PaDiM (Defard et al., ICPR 2020): per-position Gaussians, Mahalanobis distance")
