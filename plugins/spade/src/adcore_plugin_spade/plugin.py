"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("spade", "adcore_plugin_spade.detector:Spade",
             description="SPADE (Cohen & Hoshen, 2020): kNN images, then pixel kNN in their feature pyramids")
