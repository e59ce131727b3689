"""The detector contract: a small estimator API in the spirit of scikit-learn.

Parameters live in an attrs config validated at construction; ``fit`` returns
the detector; fitted state lives in attributes ending in ``_``; ``predict``
returns a :class:`Prediction` record; ``save``/``load`` use safetensors and
JSON, so loading a model never executes code.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import numpy as np
import torch

from adcore import __version__
from adcore.config import as_json_dict, build, existing_device, in_range, positive_int
from adcore.errors import ConfigError, DataError, ModelFileError, NotFittedError
from adcore.modelfile import (CONFIG_FILE, LOSS_HISTORY, MODEL_FORMAT, MODEL_FORMAT_VERSION, TENSORS_FILE, TensorSpec,
                              module_specs, open_model)
from adcore.progress import Progress, silent, terminal, track_batches

__all__ = ["Detector", "DetectorConfig", "Fitting", "Images", "Prediction", "load_model"]

if TYPE_CHECKING:
    from adcore.checkpoints import Place

Images = torch.Tensor | Iterable[torch.Tensor]
D = TypeVar("D", bound="Detector")


@attrs.define(kw_only=True)
class DetectorConfig:
    """Parameters every detector has; plugins subclass this with their own fields."""

    seed: int = attrs.field(default=0, validator=in_range(0))
    batch_size: int = attrs.field(default=32, validator=positive_int)
    device: str = attrs.field(default="cpu", validator=existing_device)


@attrs.frozen
class Prediction:
    """What ``predict`` returns.

    Attributes:
        scores: (N,) float32 image anomaly scores; higher means more anomalous.
        anomaly_maps: (N, H, W) float32 maps at the input resolution.
    """

    scores: np.ndarray
    anomaly_maps: np.ndarray


@attrs.frozen
class Fitting:
    """What the caller of ``fit`` chose besides the images, handed to ``_fit`` explicitly (no ambient state).

    Attributes:
        progress: how the fit shows its progress; plugins pass it to :mod:`adcore.training`
            or :func:`adcore.progress.track_batches`.
        checkpoint: where a trained detector's training loop saves and resumes its state
            (:func:`adcore.training.train`); None: nowhere, nothing is read or written.
    """

    progress: Progress = silent
    checkpoint: Place | None = None


class Detector(abc.ABC):
    """Base class of every anomaly detector.

    Subclasses set ``name`` and ``Config`` and implement ``_fit``,
    ``_predict_batch``, ``_get_state`` and ``_set_state``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[DetectorConfig]] = DetectorConfig
    #: Capability tags read by the conformance kit (like scikit-learn's tags).
    tags: ClassVar[Mapping[str, Any]] = {"trainable": False}

    def __init__(self, config: DetectorConfig | None = None, **params: Any) -> None:
        if config is None:
            config = build(self.Config, params)
        elif params:
            config = build(self.Config, {**as_json_dict(config), **params})
        if not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.fitted_ = False
        #: Mean training loss of every epoch run (detectors fitted with adcore.training.train
        #: assign it); saved with the model under the reserved tensor name "loss_history".
        self.loss_history_: list[float] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- public API ------------------------------------------------------
    def fit(self: D, images: Images, *, checkpoint: Place | None = None, progress: Progress = silent) -> D:
        """Learn what normal looks like from normal images only.

        Args:
            images: a (N, 3, H, W) float tensor in [0, 1], or an iterable of such
                batches (re-iterable if the detector makes several passes).
            checkpoint: where a trained detector saves its state after every epoch and
                resumes from (``adcore run`` passes one per category); without it no
                checkpoint is ever read or written.
            progress: how fitting shows its progress (:func:`adcore.progress.terminal`:
                bars, as on the command line); silent by default.

        Returns:
            The fitted detector itself.
        """
        batches, count = _as_batches(images, self.config.batch_size)
        if count == 0:
            raise DataError("cannot fit on an empty training set")
        torch.manual_seed(self.config.seed)
        self._fit(_OnDevice(batches, self.config.device), count, Fitting(progress, checkpoint))
        self.fitted_ = True
        return self

    def predict(self, images: Images, progress: str | None = "predict") -> Prediction:
        """Score images and localise anomalies.

        Args:
            images: as for :meth:`fit`.
            progress: label of a :func:`adcore.progress.terminal` bar, or None for none.

        Returns:
            Scores (N,) and anomaly maps (N, H, W) at the input resolution.
        """
        self._check_fitted("predict")
        batches, count = _as_batches(images, self.config.batch_size)
        batches = _OnDevice(batches, self.config.device)
        if progress is not None:
            batches = track_batches(terminal, batches, count, progress)
        scores, maps = [], []
        with torch.no_grad():
            for batch in batches:
                batch_scores, batch_maps = self._predict_batch(batch)
                scores.append(batch_scores.float().cpu().numpy())
                maps.append(batch_maps.float().cpu().numpy())
        if not scores:
            return Prediction(np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32))
        return Prediction(np.concatenate(scores), np.concatenate(maps))

    def save(self, folder: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder``, atomically.

        Args:
            folder: target folder; an earlier saved model there is replaced as a
                whole, anything else is refused (:class:`~adcore.errors.OutputError`).
            metadata: JSON-serialisable extras (thresholds, image size, ...).
        """
        from adcore import fs

        self._check_fitted("save")
        # config.json is the model folder's marker: only a folder holding an adcore model is replaced.
        return fs.replace_folder(Path(folder), lambda staging: self.write_files(staging, metadata),
                                 fs.Kind("a saved model folder", MODEL_FORMAT, CONFIG_FILE))

    def write_files(self, folder: Path, metadata: Mapping[str, Any] | None = None) -> None:
        """The files of :meth:`save` into ``folder`` (a staging folder: this step alone is not atomic)."""
        from safetensors.torch import save_file

        from adcore import fs

        self._check_fitted("save")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._get_state().items()}
        if self.loss_history_:
            tensors[LOSS_HISTORY] = torch.tensor(self.loss_history_, dtype=torch.float32)
        document = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "detector": self.name,
            "adcore_version": __version__,
            **_plugin_of(type(self)),
            "config": as_json_dict(self.config),
            "metadata": dict(metadata or {}),
        }
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / TENSORS_FILE))
        fs.write_json(folder / CONFIG_FILE, document)

    @classmethod
    def load(cls, folder: str | Path) -> Detector:
        """Load a saved detector (of this class or, from ``Detector``, any registered one)."""
        detector, _ = load_model(folder)
        if cls is not Detector and not isinstance(detector, cls):
            raise ModelFileError(f"{folder}: holds a '{detector.name}' model, not {cls.__name__}")
        return detector

    # -- for subclasses --------------------------------------------------
    @abc.abstractmethod
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        """Fit on batches of normal images (float32 in [0, 1], on the config's device); ``count`` in all.

        ``batches`` can be iterated again for a second pass. Report progress through
        ``fitting.progress``; a trained detector hands ``fitting.progress`` and
        ``fitting.checkpoint`` to :func:`adcore.training.train`.
        """

    @abc.abstractmethod
    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return scores (B,) and maps (B, H, W) at the batch's resolution."""

    @abc.abstractmethod
    def _get_state(self) -> dict[str, torch.Tensor]:
        """Fitted state as named tensors (all that is needed to predict)."""

    @abc.abstractmethod
    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`_get_state` returned."""

    def _state_spec(self) -> dict[str, TensorSpec] | None:
        """The tensors :meth:`_get_state` returns for this config, checked before a saved model loads.

        The default takes them from :meth:`_state_modules`, built on the meta device (no
        memory, no weights). None (no modules either) checks only that every value is finite.
        """
        with torch.device("meta"):
            modules = self._state_modules()
        return None if modules is None else module_specs(modules)

    def _state_modules(self) -> dict[str, torch.nn.Module] | None:
        """Freshly built modules whose state dicts, under these name prefixes, are the saved state.

        Detectors whose state is made of modules override this; others override
        :meth:`_state_spec`.
        """
        return None

    def _check_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Check saved values that shapes cannot describe; raise ValueError naming the tensor.

        Runs after every tensor matched :meth:`_state_spec`.
        """

    def _check_fitted(self, action: str) -> None:
        if not self.fitted_:
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit() with normal "
                                 f"images before {action}().")


def load_model(folder: str | Path, device: str | None = None) -> tuple[Detector, dict[str, Any]]:
    """Load any saved detector through the registry (onto ``device``, else the saved one); returns it and its
    metadata.

    ``config.json`` and every tensor are checked first (see :mod:`adcore.modelfile`):
    a damaged, foreign or newer model is one ModelFileError naming the file.
    """
    detector, tensors, model_metadata = open_model(Path(folder), device)
    history = tensors.pop(LOSS_HISTORY, None)
    detector._set_state(tensors)
    detector.loss_history_ = [] if history is None else [float(v) for v in history]
    detector.fitted_ = True
    return detector, model_metadata


def _as_batches(images: Images, batch_size: int) -> tuple[Iterable[torch.Tensor], int]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must have shape (N, 3, H, W); got {tuple(images.shape)}")
        return images.split(batch_size), images.shape[0]
    if isinstance(images, (list, tuple)):  # a list of batches: its len() counts batches, not images
        return images, sum(len(b) for b in images)
    if hasattr(images, "__len__"):  # a re-iterable image source (ImageBatches) counts its images
        return images, len(images)  # type: ignore[arg-type]
    materialised = list(images)
    return materialised, sum(len(b) for b in materialised)


class _OnDevice:
    """Batches as float32 tensors on the detector's device, as re-iterable as their source.

    The base class moves them for ``_fit`` and ``_predict_batch`` alike, so no
    plugin has to (and none forgets to).
    """

    def __init__(self, batches: Iterable[torch.Tensor], device: str) -> None:
        self.batches = batches
        self.device = device

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.batches:
            yield batch.to(self.device).float()


def _plugin_of(cls: type) -> dict[str, str]:
    """The distribution (and version) that ships a detector class, for model files."""
    module = cls.__module__.split(".")[0]
    for dist_name in metadata.packages_distributions().get(module, []):
        return {"plugin": dist_name, "plugin_version": metadata.version(dist_name)}
    return {"plugin": module, "plugin_version": "unknown"}

