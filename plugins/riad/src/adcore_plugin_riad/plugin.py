"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("riad", "adcore_plugin_riad.detector:RIAD",
             description="RIAD (Zavrtanik et al., PR 2021): U-Net inpainting of masked grid cells, MSGMS anomaly map")
