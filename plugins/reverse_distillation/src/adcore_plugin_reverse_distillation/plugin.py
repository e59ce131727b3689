"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("reverse_distillation", "adcore_plugin_reverse_distillation.detector:ReverseDistillation",
             description="Reverse Distillation (Deng & Li, CVPR 2022): teacher encoder, OCBE, student decoder",
             aliases=("rd4ad",))
