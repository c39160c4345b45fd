"""An mmseg EncoderDecoder built from a config dict trains through its own ``loss`` with segls'.

mmseg's ResNetV1c-18, FCN decode head (loss_weight 1.0) and FCN auxiliary head (0.4); the
same weights with mmseg's CrossEntropyLoss give the reference. Skips without mmsegmentation
as tests/test_integrations_mmseg.py says.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from test_integrations_mmseg import import_mmseg_models

from segls.integrations.mmseg import FusedUpsampleHeadMixin

NUM_CLASSES, SIZE = 4, 64


@pytest.fixture(scope="module")
def mmseg_models():
    models = import_mmseg_models()
    from mmengine.registry import init_default_scope
    from mmseg.models.decode_heads import FCNHead

    init_default_scope("mmseg")  # mmseg's data preprocessor is looked up in its scope

    class SeglsFusedFCNHead(FusedUpsampleHeadMixin, FCNHead):
        """FCNHead whose loss takes its low-resolution logits."""

    models.register_module(module=SeglsFusedFCNHead, force=True)
    return models


def weighted(loss: dict | list[dict], loss_weight: float) -> dict | list[dict]:
    """A loss config (or a head's list of them) with this loss_weight."""
    if isinstance(loss, list):
        return [dict(each, loss_weight=loss_weight) for each in loss]
    return dict(loss, loss_weight=loss_weight)


def model_config(
    loss: dict | list[dict], head: str = "FCNHead", sampler: dict | None = None
) -> dict:
    """A small EncoderDecoder: its decode head's loss is `loss`, its auxiliary's 0.4 of it."""
    norm_cfg = dict(type="BN", requires_grad=True)
    head_common = dict(num_convs=1, concat_input=False, dropout_ratio=0.0, num_classes=NUM_CLASSES)
    head_common.update(norm_cfg=norm_cfg, align_corners=False, ignore_index=255)
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", size=(SIZE, SIZE), seg_pad_val=255),
        backbone=dict(type="ResNetV1c", depth=18, out_indices=(2, 3), norm_cfg=norm_cfg),
        decode_head=dict(
            type=head,
            in_channels=512,
            in_index=1,
            channels=16,
            sampler=sampler,
            loss_decode=weighted(loss, 1.0),
            **head_common,
        ),  # fmt: skip
        auxiliary_head=dict(
            type=head,
            in_channels=256,
            in_index=0,
            channels=8,
            loss_decode=weighted(loss, 0.4),
            **head_common,
        ),  # fmt: skip
    )


def batch(seed: int = 0):
    """Two images and their SegDataSamples, a tenth of the pixels ignored."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    labels = (images[:, :1] > 0).long() + 2 * (images[:, 1:2] > 0.5).long()
    labels[torch.rand(labels.shape, generator=generator) < 0.1] = 255
    samples = []
    for label in labels:
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
        samples.append(sample)
    return images, samples


def build_twins(models, loss: dict, reference_loss: dict, **options):
    """Two models with the same weights: segls' loss and the reference loss."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours = models.build(model_config(loss, **options))
        reference_options = dict(options, head="FCNHead")
        reference = models.build(model_config(reference_loss, **reference_options))
    reference.load_state_dict(ours.state_dict())
    return ours.train(), reference.train()


def losses_and_grads(model, images, samples):
    model.zero_grad()
    losses = model.loss(images, samples)
    total = sum(value for name, value in losses.items() if "loss" in name)
    total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in losses.items()}, grads


def assert_same_training_step(ours, reference, rtol=1e-5, atol=1e-6):
    images, samples = batch()
    our_losses, our_grads = losses_and_grads(ours, images, copy.deepcopy(samples))
    ref_losses, ref_grads = losses_and_grads(reference, images, copy.deepcopy(samples))
    assert set(our_losses) == set(ref_losses) == {
        "decode.loss_ce", "decode.acc_seg", "aux.loss_ce", "aux.acc_seg"
    }  # fmt: skip
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], ref_losses[name], rtol=rtol, atol=atol)
    assert set(our_grads) == set(ref_grads)
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=rtol, atol=atol)
    return our_losses


@pytest.mark.parametrize(
    "sampler", [None, dict(type="OHEMPixelSampler", thresh=0.7, min_kept=200)], ids=["", "ohem"]
)
def test_lb_smooth_0_trains_as_mmseg_cross_entropy(mmseg_models, sampler):
    ours, reference = build_twins(
        mmseg_models,
        dict(type="SeglsCrossEntropyLoss", use_sigmoid=False, avg_non_ignore=True, lb_smooth=0.0),
        dict(type="CrossEntropyLoss", use_sigmoid=False, avg_non_ignore=True),
        sampler=sampler,
    )
    losses = assert_same_training_step(ours, reference)
    assert 0 < losses["aux.loss_ce"] < losses["decode.loss_ce"]  # the auxiliary's 0.4


def test_ohem_without_threshold_asks_the_loss_for_per_pixel_values(mmseg_models):
    ours, reference = build_twins(
        mmseg_models,
        dict(type="SeglsCrossEntropyLoss", lb_smooth=0.0),
        dict(type="CrossEntropyLoss"),
        sampler=dict(type="OHEMPixelSampler", thresh=None, min_kept=500),
    )
    assert_same_training_step(ours, reference)


@pytest.mark.parametrize(
    "sampler",
    [
        None,
        dict(type="OHEMPixelSampler", thresh=0.7, min_kept=200),
        dict(type="OHEMPixelSampler", thresh=None, min_kept=500),
    ],
    ids=["", "ohem", "ohem-top-k"],
)
def test_the_fused_head_equals_mmseg_resize_then_loss_and_keeps_acc_seg(mmseg_models, sampler):
    loss = dict(type="SeglsCrossEntropyLoss", avg_non_ignore=True, lb_smooth=0.1)
    ours, reference = build_twins(
        mmseg_models,
        dict(loss, upsample="bilinear", align_corners=False),
        loss,
        head="SeglsFusedFCNHead",
        sampler=sampler,
    )
    assert_same_training_step(ours, reference)


def test_the_fused_head_refuses_a_loss_that_upsamples_otherwise(mmseg_models):
    loss = dict(type="SeglsCrossEntropyLoss", upsample="bilinear", align_corners=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = mmseg_models.build(model_config(loss, head="SeglsFusedFCNHead"))
    with pytest.raises(ValueError, match="align_corners=True but the head upsamples with"):
        model.loss(*batch())


def test_a_few_training_steps_lower_the_loss(mmseg_models):
    loss = dict(type="SeglsCrossEntropyLoss", avg_non_ignore=True, upsample="bilinear")
    torch.manual_seed(0)
    model = mmseg_models.build(model_config(loss, head="SeglsFusedFCNHead")).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, samples = batch()
    totals = []
    for _ in range(6):
        optimizer.zero_grad()
        losses = model.loss(images, copy.deepcopy(samples))
        total = sum(value for name, value in losses.items() if "loss" in name)
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals == sorted(totals, reverse=True) and totals[-1] < 0.97 * totals[0], totals
    assert 0 <= losses["decode.acc_seg"].item() <= 100


def test_the_docs_examples_build(mmseg_models):
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "INTEGRATIONS.md"
    blocks = docs.read_text(encoding="utf-8").split("```python\n")[1:]
    config, head = {}, {}
    exec(blocks[0].split("```")[0], config)
    exec(blocks[1].split("```")[0], head)
    assert config["custom_imports"]["imports"] == ["segls.integrations.mmseg"]
    for name, weight in (("decode_head", 1.0), ("auxiliary_head", 0.4)):
        loss = mmseg_models.build(config["model"][name]["loss_decode"])
        assert (type(loss).__name__, loss.loss_weight, loss.lb_smooth) == (
            "SeglsCrossEntropyLoss", weight, 0.1
        )  # fmt: skip
    fused_head = dict(head["decode_head"], in_channels=8, channels=4, num_classes=3)
    assert isinstance(mmseg_models.build(fused_head), FusedUpsampleHeadMixin)


def test_the_fused_head_falls_back_when_a_loss_does_not_upsample(mmseg_models):
    fused = dict(type="SeglsCrossEntropyLoss", upsample="bilinear", loss_name="loss_ls")
    plain = dict(type="CrossEntropyLoss", avg_non_ignore=True)
    ours, reference = build_twins(
        mmseg_models,
        [fused, plain],
        [dict(fused, upsample=None), plain],
        head="SeglsFusedFCNHead",
    )
    images, samples = batch()
    our_losses, _ = losses_and_grads(ours, images, copy.deepcopy(samples))
    ref_losses, _ = losses_and_grads(reference, images, copy.deepcopy(samples))
    assert set(our_losses) >= {"decode.loss_ls", "decode.loss_ce", "decode.acc_seg"}
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], ref_losses[name], rtol=1e-5, atol=1e-6)
