"""The model choices a config may name, without importing smp or torch.

`segls.config` imports these to check ``eval.mode``, ``model.kwargs`` and ``loss.upsample``;
`segls.models.inference` and `segls.models.factory` implement them.
"""

MODES = ("whole", "slide")  # eval.mode: one pass over the image, or sliding windows

# Constructor arguments that build_model sets itself, and where to set them instead.
RESERVED_KWARGS = {
    "encoder_name": "set model.encoder",
    "encoder_weights": "set model.encoder_weights",
    "in_channels": "set data.in_channels",
    "classes": "set data.num_classes",
    "activation": "the model returns logits; the loss and the metrics expect them",
    "aux_params": "the model must return one tensor of logits",
}

# model.arch's names (case-insensitive) and the smp class that each builds.
ARCH_CLASS_NAMES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "unet++": "UnetPlusPlus",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "deeplabv3+": "DeepLabV3Plus",
    "linknet": "Linknet",
    "pan": "PAN",
    "manet": "MAnet",
    "upernet": "UPerNet",
    "segformer": "Segformer",
}

# Where the loss's full-resolution logits come from (loss.upsample): the model's head
# upsamples them ("outside" the loss), or the loss upsamples the head's (see `build_model`).
LOSS_UPSAMPLE = ("outside", "fused")

# The smp classes whose head ends in a bilinear upsampling (x4, PSPNet and DeepLabV3 x8),
# which the constructor argument `upsampling` sets; Unet, UnetPlusPlus, Linknet and MAnet
# decode to full resolution and have none.
HEAD_UPSAMPLING_CLASS_NAMES = (
    "FPN",
    "PAN",
    "UPerNet",
    "Segformer",
    "DeepLabV3Plus",
    "PSPNet",
    "DeepLabV3",
)


def has_head_upsampling(arch: str) -> bool | None:
    """Whether the architecture's smp head upsamples (None for a name that is not known)."""
    class_name = ARCH_CLASS_NAMES.get(str(arch).strip().lower())
    return None if class_name is None else class_name in HEAD_UPSAMPLING_CLASS_NAMES


def fused_without_head_upsampling(arch: str) -> str:
    """Why loss.upsample=fused is refused for an architecture whose head does not upsample."""
    fused = ", ".join(HEAD_UPSAMPLING_CLASS_NAMES)
    return (
        f"loss.upsample=fused needs a head that upsamples its logits; {arch} decodes to full "
        f"resolution, so there is nothing to fuse and nothing to gain. Use loss.upsample=outside, "
        f"or an architecture with one: {fused}"
    )


def fused_clash(upsampling: object) -> str:
    """Why an explicit model.kwargs.upsampling is refused with loss.upsample=fused."""
    return (
        f"model.kwargs.upsampling = {upsampling!r} clashes with loss.upsample=fused, which builds "
        "the head with upsampling=1 and upsamples in the loss: remove model.kwargs.upsampling, "
        "or use loss.upsample=outside"
    )
