"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("draem", "adcore_plugin_draem.detector:DRAEM",
             description="DRAEM (Zavrtanik et al., ICCV 2021): reconstructive + discriminative networks "
                         "trained on simulated anomalies")
