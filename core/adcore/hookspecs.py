"""Hook specifications: how a plugin adds detectors, backbones and data sets.

Each hook receives a ``register`` callable. The core owns the name tables, so it
can report clashes (naming both distributions) and suggest names for typos.
A plugin's hook module should import nothing heavy: ``register`` takes a
lazy ``"module:attribute"`` string, so listing plugins never imports torch.
Hooks may gain parameters over time, never lose them; an implementation may
accept a subset of the parameters (pluggy passes only what it names).

Names and aliases match ``[a-z][a-z0-9_]*``; ``register`` refuses any other
(recorded as the plugin's load error) and keeps the plugin's valid names. A
hook that raises registers none of its names; a name that two distributions
register belongs to neither until the user resolves it (see
``docs/writing-a-plugin.md``).
"""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "register_backbones", "register_datasets", "register_detectors"]

PROJECT_NAME = "adcore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_detectors(register):  # type: ignore[no-untyped-def]
    """Register anomaly detectors.

    Args:
        register: ``register(name, target, *, description="", aliases=())``.
            ``name`` is the registry name users type
            (``adcore run --detector NAME``), matching ``[a-z][a-z0-9_]*``
            like every alias; ``target`` is
            ``"package.module:ClassName"`` of a :class:`adcore.Detector`
            subclass, imported only when the detector is used.

    Example::

        @hookimpl
        def register_detectors(register):
            register("patchcore", "adcore_plugin_patchcore.detector:PatchCore",
                     description="PatchCore (Roth et al., CVPR 2022)")
    """


@hookspec
def register_backbones(register):  # type: ignore[no-untyped-def]
    """Register feature backbones.

    Args:
        register: ``register(name, target, *, description="", aliases=())``.
            ``target`` is ``"module:function"`` of a factory
            ``create(strides, weights=None) -> adcore.backbones.Backbone`` that
            returns a network computing the feature maps at the requested
            strides, with its channels, strides and input normalisation.

    Example::

        @hookimpl
        def register_backbones(register):
            register("my_net", "my_pkg.nets:create_my_net", description="...")
    """


@hookspec
def register_datasets(register):  # type: ignore[no-untyped-def]
    """Register data set readers.

    Args:
        register: ``register(name, target, *, description="", aliases=())``.
            ``target`` is ``"module:function"`` of a function
            ``open(root: Path | None, categories, **options) -> list[adcore.data.Category]``
            that lists the train, validation and test samples of each category.

    Example::

        @hookimpl
        def register_datasets(register):
            register("visa_csv", "my_pkg.visa:open_visa", description="VisA split CSV")
    """
