"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("simplenet", "adcore_plugin_simplenet.detector:SimpleNet",
             description="SimpleNet (Liu et al., CVPR 2023): feature adaptor + discriminator vs. noised features")
