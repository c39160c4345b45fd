"""Tests for segls.metrics against a NumPy re-implementation and hand-worked examples."""

import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segls.metrics import SegMetrics, confusion_matrix, format_table, scores_from_confusion

REPO_ROOT = Path(__file__).resolve().parents[1]

SCORE_KEYS = ("aAcc", "mIoU", "mAcc", "mDice")
CLASS_KEYS = ("IoU", "Acc", "Dice")


def reference_confusion(preds, labels, num_classes, ignore_index):
    """Confusion matrix by np.add.at over the labelled pixels (rows = label, cols = pred)."""
    labels = np.asarray(labels).astype(np.int64)
    preds = np.asarray(preds).astype(np.int64)
    valid = labels != ignore_index
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels[valid], preds[valid]), 1)
    return cm


def reference_scores(cm):
    """mmseg-style scores by explicit per-class loops; NaN where a denominator is zero."""
    num_classes = cm.shape[0]
    iou, acc, dice = [], [], []
    for c in range(num_classes):
        tp = int(cm[c, c])
        label_area = int(sum(cm[c, j] for j in range(num_classes)))
        pred_area = int(sum(cm[i, c] for i in range(num_classes)))
        union = label_area + pred_area - tp
        iou.append(tp / union if union else math.nan)
        acc.append(tp / label_area if label_area else math.nan)
        dice.append(2 * tp / (label_area + pred_area) if label_area + pred_area else math.nan)

    def mean_defined(values):
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined) if defined else math.nan

    total = int(cm.sum())
    return {
        "aAcc": int(np.trace(cm)) / total if total else math.nan,
        "mIoU": mean_defined(iou),
        "mAcc": mean_defined(acc),
        "mDice": mean_defined(dice),
        "IoU": iou,
        "Acc": acc,
        "Dice": dice,
    }


def assert_scores_equal(actual, expected):
    """Same keys, same values up to 1e-12, NaN in the same places."""
    assert set(actual) == set(SCORE_KEYS + CLASS_KEYS)
    for key in SCORE_KEYS:
        assert isinstance(actual[key], float), key
        assert actual[key] == pytest.approx(expected[key], abs=1e-12, nan_ok=True), key
    for key in CLASS_KEYS:
        assert all(isinstance(v, float) for v in actual[key]), key
        assert actual[key] == pytest.approx(expected[key], abs=1e-12, nan_ok=True), key


@st.composite
def segmentation_batch(draw, shape=None):
    """(preds as indices or logits, labels, num_classes, ignore_index, reference preds)."""
    num_classes = draw(st.integers(2, 8))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6))
    label_dtype = draw(st.sampled_from([np.uint8, np.int64]))
    ignore_index = 255 if label_dtype == np.uint8 else draw(st.sampled_from([255, -1]))
    label_values = st.one_of(st.integers(0, num_classes - 1), st.just(ignore_index))
    labels = draw(hnp.arrays(label_dtype, shape, elements=label_values))
    if draw(st.booleans()):
        logits_shape = (shape[0], num_classes, *shape[1:])
        logits = draw(hnp.arrays(np.float32, logits_shape, elements=st.integers(-4, 4)))
        return (
            torch.from_numpy(logits),
            torch.from_numpy(labels),
            num_classes,
            ignore_index,
            logits.argmax(axis=1),
        )
    pred_dtype = draw(st.sampled_from([np.uint8, np.int32, np.int64]))
    preds = draw(hnp.arrays(pred_dtype, shape, elements=st.integers(0, num_classes - 1)))
    return torch.from_numpy(preds), torch.from_numpy(labels), num_classes, ignore_index, preds


@settings(max_examples=150, deadline=None)
@given(segmentation_batch())
def test_matches_numpy_reference(batch):
    preds, labels, num_classes, ignore_index, reference_preds = batch
    cm = confusion_matrix(preds, labels, num_classes, ignore_index)
    expected_cm = reference_confusion(reference_preds, labels.numpy(), num_classes, ignore_index)
    assert cm.dtype == torch.int64
    assert cm.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(cm.numpy(), expected_cm)
    assert_scores_equal(scores_from_confusion(cm), reference_scores(expected_cm))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_accumulating_batches_equals_one_update_on_concatenation(data):
    batch_shape = data.draw(hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5))
    first = data.draw(segmentation_batch(shape=batch_shape))
    num_classes, ignore_index = first[2], first[3]
    num_batches = data.draw(st.integers(1, 4))
    preds_list, labels_list = [], []
    metrics = SegMetrics(num_classes, ignore_index=ignore_index)
    for _ in range(num_batches):
        labels_values = st.one_of(st.integers(0, num_classes - 1), st.just(ignore_index))
        labels = torch.from_numpy(
            data.draw(hnp.arrays(np.int64, batch_shape, elements=labels_values))
        )
        logits = torch.from_numpy(
            data.draw(
                hnp.arrays(
                    np.float32,
                    (batch_shape[0], num_classes, *batch_shape[1:]),
                    elements=st.integers(-3, 3),
                )
            )
        )
        metrics.update(logits, labels)
        preds_list.append(logits)
        labels_list.append(labels)
    whole = SegMetrics(num_classes, ignore_index=ignore_index)
    whole.update(torch.cat(preds_list), torch.cat(labels_list))
    assert torch.equal(metrics.confusion, whole.confusion)
    assert_scores_equal(metrics.compute(), whole.compute())


def test_hand_worked_example():
    # Five classes; class 3 is only predicted, class 4 appears nowhere; one pixel ignored.
    # (label, pred) pairs: (0,0) (0,1) (1,1) (1,1) (1,3) (2,2) (2,0); (255,1) is ignored.
    #          pred 0 1 2 3 4      tp = [1, 2, 1, 0, 0]
    # label 0:      1 1 0 0 0      label area = [2, 3, 2, 0, 0]
    # label 1:      0 2 0 1 0      pred area  = [2, 3, 1, 1, 0]
    # label 2:      1 0 1 0 0
    # IoU  = tp / (label + pred - tp) = [1/3, 2/4, 1/2, 0/1, nan]
    # Acc  = tp / label              = [1/2, 2/3, 1/2, nan, nan]
    # Dice = 2 tp / (label + pred)   = [2/4, 4/6, 2/3, 0/1, nan]
    # aAcc = 4/7; mIoU = (1/3 + 1/2 + 1/2 + 0) / 4 = 1/3; mAcc = (1/2 + 2/3 + 1/2) / 3 = 5/9;
    # mDice = (1/2 + 2/3 + 2/3 + 0) / 4 = 11/24.
    labels = torch.tensor([[[0, 0, 1, 1], [1, 2, 2, 255]]], dtype=torch.uint8)
    preds = torch.tensor([[[0, 1, 1, 1], [3, 2, 0, 1]]])
    cm = confusion_matrix(preds, labels, num_classes=5)
    expected_cm = [
        [1, 1, 0, 0, 0],
        [0, 2, 0, 1, 0],
        [1, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    assert cm.tolist() == expected_cm
    nan = math.nan
    expected = {
        "aAcc": 4 / 7,
        "mIoU": 1 / 3,
        "mAcc": 5 / 9,
        "mDice": 11 / 24,
        "IoU": [1 / 3, 1 / 2, 1 / 2, 0.0, nan],
        "Acc": [1 / 2, 2 / 3, 1 / 2, nan, nan],
        "Dice": [1 / 2, 2 / 3, 2 / 3, 0.0, nan],
    }
    assert_scores_equal(scores_from_confusion(cm), expected)


def test_absent_class_is_nan_and_left_out_of_means():
    labels = torch.tensor([[0, 0, 1, 1]])
    preds = torch.tensor([[0, 0, 1, 1]])
    scores = scores_from_confusion(confusion_matrix(preds, labels, num_classes=3))
    assert scores["IoU"][:2] == [1.0, 1.0] and math.isnan(scores["IoU"][2])
    assert math.isnan(scores["Acc"][2]) and math.isnan(scores["Dice"][2])
    assert scores["mIoU"] == scores["mAcc"] == scores["mDice"] == scores["aAcc"] == 1.0


def test_predicted_only_class_scores_zero_iou_and_nan_acc():
    labels = torch.tensor([[0, 0, 0, 0]])
    preds = torch.tensor([[0, 0, 0, 1]])
    scores = scores_from_confusion(confusion_matrix(preds, labels, num_classes=2))
    assert scores["IoU"] == [0.75, 0.0]
    assert scores["Acc"][0] == 0.75 and math.isnan(scores["Acc"][1])
    assert scores["mIoU"] == pytest.approx(0.375)
    assert scores["mAcc"] == 0.75


def test_all_ignored_gives_nan_without_warnings():
    labels = torch.full((2, 3, 3), 255, dtype=torch.uint8)
    preds = torch.randn(2, 4, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = confusion_matrix(preds, labels, num_classes=4)
        scores = scores_from_confusion(cm)
        empty_scores = SegMetrics(4).compute()
    assert cm.sum().item() == 0
    for result in (scores, empty_scores):
        assert all(math.isnan(result[key]) for key in SCORE_KEYS)
        assert all(math.isnan(v) for key in CLASS_KEYS for v in result[key])
        assert len(result["IoU"]) == 4


def test_ignore_index_applies_before_conversion_of_uint8_labels():
    labels = torch.tensor([[0, 1, 255]], dtype=torch.uint8)
    preds = torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="255"):
        confusion_matrix(preds, labels, num_classes=2, ignore_index=-1)
    assert confusion_matrix(preds, labels, num_classes=2).tolist() == [[1, 0], [0, 1]]


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 3, 5\)"):
        confusion_matrix(
            torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3, 5, dtype=torch.uint8), 3
        )


def test_labels_out_of_range_are_named():
    labels = torch.tensor([[0, 7, 255, -3, 7]])
    with pytest.raises(ValueError, match=r"-3, 7 outside \[0, 3\)"):
        confusion_matrix(torch.zeros_like(labels), labels, num_classes=3)


def test_preds_out_of_range_are_named_but_ignored_pixels_are_not_checked():
    labels = torch.tensor([[0, 1, 255]])
    with pytest.raises(ValueError, match=r"preds hold values 5 outside \[0, 2\)"):
        confusion_matrix(torch.tensor([[0, 5, 1]]), labels, num_classes=2)
    assert confusion_matrix(torch.tensor([[0, 1, 9]]), labels, num_classes=2).sum().item() == 2


def test_logits_with_wrong_channel_count_and_float_indices_are_rejected():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_classes=3 channels"):
        confusion_matrix(torch.randn(2, 5, 4, 4), labels, num_classes=3)
    with pytest.raises(ValueError, match="neither class indices"):
        confusion_matrix(torch.zeros(2, 4, 4), labels, num_classes=3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix(labels, labels.float(), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        SegMetrics(0)


def test_segmetrics_reset_device_and_unsynced_compute():
    metrics = SegMetrics(3, device="cpu")
    assert metrics.confusion.tolist() == [[0] * 3] * 3
    metrics.update(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]))
    snapshot = metrics.confusion
    snapshot += 100
    assert metrics.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert_scores_equal(metrics.compute(sync=True), metrics.compute())
    metrics.reset()
    assert metrics.confusion.sum().item() == 0


def test_format_table():
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [1, 0, 5]])
    # label areas [4, 0, 6], pred areas [4, 1, 5], tp [3, 0, 5]:
    # IoU = [3/5, 0/1, 5/6], Acc = [3/4, nan, 5/6], Dice = [6/8, 0/1, 10/11]; aAcc = 8/10,
    # mIoU = (0.6 + 0 + 0.8333) / 3, mAcc = (0.75 + 0.8333) / 2, mDice = (0.75 + 0 + 0.9091) / 3.
    table = format_table(scores_from_confusion(cm), ["background", "cell", "debris"])
    expected = textwrap.dedent(
        """\
        Class           IoU      Acc     Dice
        background    60.00    75.00    75.00
        cell           0.00        -     0.00
        debris        83.33    83.33    90.91
        -------------------------------------
        aAcc: 80.00  mIoU: 47.78  mAcc: 79.17  mDice: 55.30"""
    )
    assert table == expected
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        format_table(scores_from_confusion(cm), ["a", "b"])


DIST_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from segls.metrics import SegMetrics

BATCHES = {
    0: (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 255]])),
    1: (torch.tensor([[2, 2, 0]]), torch.tensor([[2, 1, 0]])),
}


def worker(rank, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=2)
    metrics = SegMetrics(3)
    if rank == 0:
        metrics.update(*BATCHES[0])
    only_rank0 = metrics.reduce_across_processes()
    again = metrics.compute(sync=True)
    local_after_sync = metrics.confusion
    if rank == 1:
        metrics.update(*BATCHES[1])
    both = metrics.reduce_across_processes()
    result = {"only_rank0": only_rank0, "both": both, "local": local_after_sync}
    result["again_miou"] = torch.tensor(again["mIoU"])
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
"""


def test_reduce_across_processes_with_gloo(tmp_path):
    script = tmp_path / "dist_metrics.py"
    script.write_text(DIST_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    batch0 = reference_confusion([[0, 1, 1, 2]], [[0, 1, 2, 255]], 3, 255)
    batch1 = reference_confusion([[2, 2, 0]], [[2, 1, 0]], 3, 255)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        np.testing.assert_array_equal(result["only_rank0"].numpy(), batch0)
        np.testing.assert_array_equal(result["both"].numpy(), batch0 + batch1)
        local = batch0 if rank == 0 else np.zeros_like(batch0)
        np.testing.assert_array_equal(result["local"].numpy(), local)
        assert result["again_miou"].item() == pytest.approx(reference_scores(batch0)["mIoU"])


def test_import_pulls_in_no_training_stack():
    code = (
        "import sys, segls.metrics\n"
        "stack = {'albumentations', 'segmentation_models_pytorch', 'tensorboard', 'torchvision',"
        " 'cv2', 'yaml'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in stack))\n"
        "own = [m for m in sys.modules if m.split('.')[:2] == ['segls', 'metrics']]\n"
        "print(sorted(m for m in sys.modules if m.startswith('segls.') and m not in own))\n"
    )
    this_checkout = f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
    run = subprocess.run(
        [sys.executable, "-I", "-c", this_checkout + code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["[]", "[]"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 17, 19, generator=generator)
    labels = torch.randint(0, 5, (2, 17, 19), generator=generator)
    labels[:, :3] = 255
    metrics = SegMetrics(5)
    metrics.update(logits.cuda(), labels.cuda().to(torch.uint8))
    assert metrics.confusion.device.type == "cuda"
    expected = reference_confusion(logits.argmax(1).numpy(), labels.numpy(), 5, 255)
    np.testing.assert_array_equal(metrics.confusion.cpu().numpy(), expected)
    assert_scores_equal(metrics.compute(), reference_scores(expected))
