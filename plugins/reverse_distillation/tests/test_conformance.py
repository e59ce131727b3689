"""Reverse Distillation passes the shared adcore detector checks; the student mirrors the teacher."""

import torch

from adcore.features import FeatureExtractor
from adcore.testing import parametrize_with_checks
from adcore_plugin_reverse_distillation.detector import ReverseDistillation, distillation_loss


# Quick-test settings: 16 conformance images at 64 px; 4 images a step gives 4 steps an epoch.
# Measured: 5 epochs -> image/pixel AUROC 0.875/0.91; 3 epochs -> 0.58/0.78 (fails).
QUICK = {"epochs": 5, "train_batch_size": 4}


@parametrize_with_checks(lambda **kw: ReverseDistillation(**{**QUICK, **kw}))
def test_conformance(check):
    check()


def test_decoder_matches_teacher_levels_efficientnet_lite0():
    detector = ReverseDistillation(backbone="efficientnet_lite0")
    extractor = FeatureExtractor("efficientnet_lite0", (4, 8, 16), weights="random")
    assert extractor.strides == [4, 8, 16]
    ocbe, decoder = detector.build(extractor.channels, extractor.strides, extractor.non_negative)
    for size in ((64, 64), (64, 96), (72, 100)):  # also sizes that do not divide by 32
        teacher = extractor(torch.rand(2, 3, *size))
        code = ocbe.eval()(teacher)
        assert code.shape[1] == 2 * extractor.channels[-1]
        student = decoder.eval()(code, [t.shape[-2:] for t in teacher])
        assert [s.shape for s in student] == [t.shape for t in teacher]
        assert float(distillation_loss(teacher, teacher)) < 1e-5


def test_rd4ad_alias():
    from adcore.plugins import get_registry

    assert get_registry().load_object("detector", "rd4ad") is ReverseDistillation


def test_student_can_output_what_a_signed_teacher_outputs():
    """Lite0's levels are signed: no stage may end in a ReLU, or 1 - cos keeps a floor."""
    extractor = FeatureExtractor("efficientnet_lite0", (4, 8, 16), weights="random")
    ocbe, decoder = ReverseDistillation().build(extractor.channels, extractor.strides, extractor.non_negative)
    teacher = extractor(torch.rand(2, 3, 64, 64))
    student = decoder.eval()(ocbe.eval()(teacher), [t.shape[-2:] for t in teacher])
    assert all(bool((s < 0).any()) for s in student)


def test_student_of_a_post_relu_teacher_ends_in_relu():
    """As in the official de-ResNet: ResNet levels are post-ReLU, so is every decoder stage."""
    channels, strides = [64, 128, 256], [4, 8, 16]
    ocbe, decoder = ReverseDistillation(backbone="resnet18").build(channels, strides, [True] * 3)
    teacher = [torch.rand(2, c, 64 // s, 64 // s) for c, s in zip(channels, strides)]
    student = decoder.eval()(ocbe.eval()(teacher), [t.shape[-2:] for t in teacher])
    assert all(float(s.min()) >= 0 for s in student)
