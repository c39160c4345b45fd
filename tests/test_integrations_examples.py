"""The Lightning and transformers examples of docs/INTEGRATIONS.md run as written, offline,
and the Segformer example's loss is transformers' own (at ε = 0), gradients included.

Lightning and transformers are optional: without them these tests skip, saying why, and
fail instead when SEGLS_REQUIRE_INTEGRATIONS=1 (as CI's integrations step sets).
tests/test_readme.py skips these blocks (their ``<!-- not run -->`` marker names this file);
here each block runs in a fresh namespace, as a user would paste it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import pytest
import torch
from helpers import REPO_ROOT
from test_readme import PYTHON_LANGS, Block, code_blocks

from segls.losses import label_smooth_softmax_ce

PAGE = "docs/INTEGRATIONS.md"
RUN_HERE = "tests/test_integrations_examples.py runs it"
# The package each example needs, by the heading of its section.
EXAMPLES = {
    "PyTorch Lightning": "lightning",
    "Hugging Face transformers: Segformer": "transformers",
}


def require(package: str):
    """The package, imported; skips without it (fails with SEGLS_REQUIRE_INTEGRATIONS=1)."""
    if importlib.util.find_spec(package) is None:
        if os.environ.get("SEGLS_REQUIRE_INTEGRATIONS") == "1":
            pytest.fail(f"SEGLS_REQUIRE_INTEGRATIONS=1 but {package} is not installed")
        pytest.skip(f"{package} is not installed (bash .ci/integrations installs it)")
    return importlib.import_module(package)


def section_blocks(heading: str) -> list[Block]:
    """The python blocks of the page's ``## heading`` section."""
    text = (REPO_ROOT / PAGE).read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block for block in code_blocks(section, PAGE) if block.lang in PYTHON_LANGS]


def test_every_block_left_to_this_file_is_one_it_runs():
    text = (REPO_ROOT / PAGE).read_text(encoding="utf-8")
    left_here = [b for b in code_blocks(text, PAGE) if b.not_run and RUN_HERE in b.not_run]
    run_here = [block for heading in EXAMPLES for block in section_blocks(heading)]
    assert len(run_here) == len(EXAMPLES)
    assert [b.code for b in left_here] == [b.code for b in run_here]


@pytest.fixture
def offline_in_scratch(offline, monkeypatch, tmp_path):
    """Offline (tests/conftest.py), in a scratch working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("heading", list(EXAMPLES))
def test_example_runs_as_written(heading, offline_in_scratch):
    require(EXAMPLES[heading])
    (block,) = section_blocks(heading)
    namespace: dict = {"__name__": "__example__"}
    exec(compile(block.code, f"{PAGE}:{heading}", "exec"), namespace)
    loss = namespace.get("loss")
    if isinstance(loss, torch.Tensor):
        assert loss.ndim == 0 and torch.isfinite(loss)


def tiny_segformer(num_labels: int = 7):
    """A Segformer from a small config, random weights (nothing downloaded)."""
    transformers = require("transformers")
    config = transformers.SegformerConfig(
        num_labels=num_labels,
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    torch.manual_seed(0)
    return transformers.SegformerForSemanticSegmentation(config).double().eval()


def test_segformer_loss_is_transformers_own_with_its_gradient():
    model = tiny_segformer()
    images = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 64, 48))
    labels[0, :20] = model.config.semantic_loss_ignore_index
    labels[1, :, :5] = model.config.semantic_loss_ignore_index

    theirs = model(pixel_values=images, labels=labels)
    their_grads = torch.autograd.grad(theirs.loss, list(model.parameters()))
    logits = model(pixel_values=images).logits
    assert logits.shape[-2:] == (16, 12)  # 1/4 of the labels' size
    ours = label_smooth_softmax_ce(
        logits,
        labels,
        0.0,
        ignore_index=model.config.semantic_loss_ignore_index,
        upsample="bilinear",
        align_corners=False,
    )
    our_grads = torch.autograd.grad(ours, list(model.parameters()))

    torch.testing.assert_close(ours, theirs.loss, rtol=1e-12, atol=0)
    for our_grad, their_grad in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(our_grad, their_grad, rtol=1e-9, atol=1e-12)
