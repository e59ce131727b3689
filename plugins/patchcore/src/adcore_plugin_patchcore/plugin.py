"""Hook implementations only: importing this must stay light (no torch)."""

from adcore.hookspecs import hookimpl


@hookimpl
def register_detectors(register):  # type: ignore[no-untyped-def]
    register("patchcore", "adcore_plugin_patchcore.detector:PatchCore",
             description="PatchCore (Roth et al., CVPR 2022): patch memory bank with greedy coreset")
