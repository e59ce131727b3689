"""SPADE's scores against naive computations on tiny examples."""

import pytest
import torch

from adcore.errors import ConfigError
from adcore.ops import gaussian_blur, upsample_maps
from adcore_plugin_spade.detector import Spade

SIZE = 32


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _tiny(**params: object) -> Spade:
    return Spade(backbone_weights="random", gallery_dtype="float32", batch_size=3, **params)


def _naive_image_scores(detector: Spade, train: torch.Tensor, test: torch.Tensor, k: int) -> torch.Tensor:
    levels = dict(zip(detector.extractor.strides, detector.extractor(train)))
    train_desc = levels[32].mean(dim=(2, 3)).double()
    levels = dict(zip(detector.extractor.strides, detector.extractor(test)))
    test_desc = levels[32].mean(dim=(2, 3)).double()
    rows = []
    for t in test_desc:
        dist = sorted(float(((t - r) ** 2).sum().sqrt()) for r in train_desc)
        rows.append(sum(dist[:k]) / k)
    return torch.tensor(rows, dtype=torch.float64)


def test_image_score_is_mean_distance_to_k_nearest_images():
    train, test = _images(7, 0), _images(2, 1)
    detector = _tiny(k_images=3).fit(train)
    scores, _ = detector.score(test)
    torch.testing.assert_close(scores.double(), _naive_image_scores(detector, train, test, 3), rtol=1e-4, atol=1e-5)


def test_k_images_clipped_to_training_set():
    train, test = _images(4, 2), _images(2, 3)
    detector = _tiny(k_images=50).fit(train)
    prediction = detector.predict(test, progress=None)
    torch.testing.assert_close(torch.from_numpy(prediction.scores).double(),
                               _naive_image_scores(detector, train, test, 4), rtol=1e-4, atol=1e-5)
    assert prediction.anomaly_maps.shape == (2, SIZE, SIZE)


def test_pixel_score_is_brute_force_nearest_distance():
    train, test = _images(6, 4), _images(2, 5)
    detector = _tiny(k_images=2, k_pixels=1).fit(train)
    _, maps = detector.score(test)
    image, pixels = detector.features(test)
    train_image, train_pixels = detector.features(train)
    h, w, c = pixels.shape[1:]
    for b in range(test.shape[0]):
        nearest = torch.cdist(image[b: b + 1].double(), train_image.double())[0].argsort()[:2]
        gallery = train_pixels[nearest].reshape(-1, c).double()
        query = pixels[b].reshape(-1, c).double()
        brute = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1).sqrt().min(dim=1).values
        torch.testing.assert_close(maps[b].reshape(-1).double(), brute, rtol=1e-4, atol=1e-4)
    # the returned map is that grid upsampled and blurred
    expected = gaussian_blur(upsample_maps(maps, (SIZE, SIZE)), detector.config.sigma)
    prediction = detector.predict(test, progress=None)
    torch.testing.assert_close(torch.from_numpy(prediction.anomaly_maps), expected, rtol=1e-5, atol=1e-5)


def test_kappa_averages_the_nearest_gallery_distances():
    train, test = _images(3, 6), _images(1, 7)
    detector = _tiny(k_images=3, k_pixels=4).fit(train)
    _, maps = detector.score(test)
    _, pixels = detector.features(test)
    _, train_pixels = detector.features(train)
    c = pixels.shape[-1]
    dist = torch.cdist(pixels[0].reshape(-1, c).double(), train_pixels.reshape(-1, c).double())
    expected = dist.topk(4, dim=1, largest=False).values.mean(dim=1)
    torch.testing.assert_close(maps[0].reshape(-1).double(), expected, rtol=1e-4, atol=1e-4)


def test_float16_gallery_close_to_float32():
    train, test = _images(5, 8), _images(2, 9)
    full = _tiny(k_images=2).fit(train)
    half = Spade(backbone_weights="random", gallery_dtype="float16", k_images=2).fit(train)
    assert half.pyramid_.dtype == torch.float16
    _, a = full.score(test)
    _, b = half.score(test)
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2 * float(a.abs().max()))


@pytest.mark.parametrize("params", [{"gallery_dtype": "float64"}, {"image_layer": 5}, {"k_images": 0},
                                    {"k_pixels": 0}, {"layers": (8, 4)}, {"sigma": -1.0}])
def test_invalid_parameters(params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        Spade(**params)

