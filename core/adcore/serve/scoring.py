"""One image in, one answer out: what ``POST /predict`` computes, with no web framework in sight.

Why request bytes go through a scratch file: :mod:`adcore.imageio` is the one
image reader (EXIF orientation, every mode and bit depth, the decompression-bomb
limit), and it reads paths. A served image is therefore decoded exactly as
``adcore predict`` decodes the same file, so both give the same score.
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adcore import __version__, visualize
from adcore.errors import ConfigError, DataError
from adcore.framing import Framing, Inspection

__all__ = ["BadImage", "Scorer"]

#: How Pillow names the file it could not identify; the scratch file's name means nothing to a client.
_PILLOW_FILE = re.compile(r"\s*<_io\.\w+ name=[^>]*>")


class BadImage(Exception):
    """A request image that cannot be scored; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Scorer:
    """A loaded model that scores request images one at a time (the model uses every core already).

    Args:
        model: the engine from :func:`adcore.predicting.load_engine`.
        meta: its metadata (image_size, thresholds, display range).
        engine: "torch" or "onnx", for the answers.
        scratch: a private folder for the request files.
    """

    def __init__(self, model: Any, meta: dict[str, Any], engine: str, scratch: Path) -> None:
        self.model = model
        self.meta = meta
        self.engine = engine
        self.scratch = scratch
        self.framing = Framing.from_metadata(meta)  # the model's own resizing or tiling, as adcore predict
        self.size = self.framing.input_size
        # Tiles per detector call: an export's fixed batch, else the detector's own batch size.
        self.batch_size = getattr(model, "batch_size", None) or model.config.batch_size
        self.lock = threading.Lock()
        self.info = {"detector": model.name, "category": meta.get("category"), "engine": engine,
                     "image_size": self.size, "adcore_version": __version__}

    def warm_up(self) -> None:
        """One prediction on a blank image: the first real request then pays no one-off costs."""
        with self.lock:
            for model in getattr(self.model, "detectors", [self.model]):  # each one of a per-position model
                model.predict(torch.zeros(1, 3, self.size, self.size), progress=None)

    def score(self, data: bytes, with_map: bool = True) -> dict[str, Any]:
        """The answer for one encoded image (BadImage when it is not one adcore can read)."""
        start = time.perf_counter()
        prediction, (width, height) = self._inspect(data)
        score, small_map = float(prediction.scores[0]), prediction.maps[0]
        if not (np.isfinite(score) and np.isfinite(small_map).all()):
            raise BadImage(422, "the detector gave a non-finite score or map for this image; no verdict is possible")
        threshold = self.meta.get("image_threshold")
        anomalous = None if threshold is None else bool(score >= threshold)
        answer: dict[str, Any] = {
            "score": score, "anomalous": anomalous,
            "verdict": None if anomalous is None else ("anomalous" if anomalous else "normal"),
            "image_threshold": threshold, "pixel_threshold": self.meta.get("pixel_threshold"),
            "model": self.info, "image": {"width": width, "height": height},
        }
        if with_map:
            answer["anomaly_map_png"] = self._map_png(small_map)
            answer["map_size"] = [int(small_map.shape[1]), int(small_map.shape[0])]
        answer["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
        return answer

    def _inspect(self, data: bytes) -> tuple[Inspection, tuple[int, int]]:
        """The framed prediction of one request image and the image's (width, height)."""
        if not data:
            raise BadImage(400, "the request holds no image (empty body)")
        path = self.scratch / f"request-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            path.write_bytes(data)
            (size,) = self.framing.check_images([path])
            with self.lock:
                prediction = self.framing.predict(self.model, [path], self.batch_size, progress=None)
        except ConfigError as exc:  # an image smaller than the model's tile
            raise BadImage(422, str(exc).replace(f"{path}", "the image")) from None
        except DataError as exc:
            message = _PILLOW_FILE.sub("", str(exc).replace(f"{path}: ", ""))
            status = 413 if "decompression bomb" in message else 400
            raise BadImage(status, f"not an image adcore can read: {message}" if status == 400 else message) from None
        finally:
            path.unlink(missing_ok=True)
        return prediction, size

    def _map_png(self, small_map: np.ndarray) -> str:
        """The map at the working size as a coloured PNG data URL (the page stretches it over the image)."""
        vmin, vmax = self.meta.get("display_range") or [float(small_map.min()), float(small_map.max())]
        buffer = io.BytesIO()
        Image.fromarray(visualize.colorize(small_map, vmin, vmax)).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
