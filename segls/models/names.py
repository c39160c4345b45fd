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

# smp.encoders.get_encoder_names() of the smp that segls is tested with, so that model.encoder
# is checked at config load without importing smp (tests/test_models_names.py keeps it in step).
SMP_ENCODER_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "resnext101_32x4d", "resnext101_32x8d", "resnext101_32x16d", "resnext101_32x32d",
    "resnext101_32x48d", "dpn68", "dpn68b", "dpn92", "dpn98", "dpn107", "dpn131", "vgg11",
    "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "senet154",
    "se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d", "se_resnext101_32x4d",
    "densenet121", "densenet169", "densenet201", "densenet161", "inceptionresnetv2",
    "inceptionv4", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3",
    "efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7", "mobilenet_v2",
    "xception", "timm-efficientnet-b0", "timm-efficientnet-b1", "timm-efficientnet-b2",
    "timm-efficientnet-b3", "timm-efficientnet-b4", "timm-efficientnet-b5",
    "timm-efficientnet-b6", "timm-efficientnet-b7", "timm-efficientnet-b8",
    "timm-efficientnet-l2", "timm-tf_efficientnet_lite0", "timm-tf_efficientnet_lite1",
    "timm-tf_efficientnet_lite2", "timm-tf_efficientnet_lite3", "timm-tf_efficientnet_lite4",
    "timm-skresnet18", "timm-skresnet34", "timm-skresnext50_32x4d", "mit_b0", "mit_b1",
    "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mobileone_s0", "mobileone_s1", "mobileone_s2",
    "mobileone_s3", "mobileone_s4",
)  # fmt: skip

# Encoder names of our own (lower case) and the smp name each stands for.
ENCODER_ALIASES = {"efficientnet-lite0": "tu-tf_efficientnet_lite0"}

# timm's models, as smp takes them ("tu-<name>"): only the form is checked at config load
# (timm's list is 1,300 names and needs torch); `build_model` asks timm whether it has the name.
TIMM_ENCODER_RE = r"tu-[a-z0-9][a-z0-9_.]*"

# The constructor arguments of each smp class that model.kwargs may set (those of
# RESERVED_KWARGS excluded), so that a key smp would refuse is refused at config load
# (tests/test_models_names.py compares them with the classes' signatures).
ARCH_KWARGS = {
    "Unet": ("encoder_depth", "decoder_use_norm", "decoder_channels", "decoder_attention_type",
             "decoder_interpolation"),
    "UnetPlusPlus": ("encoder_depth", "decoder_use_norm", "decoder_channels",
                     "decoder_attention_type", "decoder_interpolation"),
    "FPN": ("encoder_depth", "decoder_pyramid_channels", "decoder_segmentation_channels",
            "decoder_merge_policy", "decoder_dropout", "decoder_interpolation", "upsampling"),
    "PSPNet": ("encoder_depth", "psp_out_channels", "decoder_use_norm", "psp_dropout",
               "upsampling"),
    "DeepLabV3": ("encoder_depth", "encoder_output_stride", "decoder_channels",
                  "decoder_atrous_rates", "decoder_aspp_separable", "decoder_aspp_dropout",
                  "upsampling"),
    "DeepLabV3Plus": ("encoder_depth", "encoder_output_stride", "decoder_channels",
                      "decoder_atrous_rates", "decoder_aspp_separable", "decoder_aspp_dropout",
                      "upsampling"),
    "Linknet": ("encoder_depth", "decoder_use_norm"),
    "PAN": ("encoder_depth", "encoder_output_stride", "decoder_channels",
            "decoder_interpolation", "upsampling"),
    "MAnet": ("encoder_depth", "decoder_use_norm", "decoder_channels", "decoder_pab_channels",
              "decoder_interpolation"),
    "UPerNet": ("encoder_depth", "decoder_channels", "decoder_use_norm", "upsampling"),
    "Segformer": ("encoder_depth", "decoder_segmentation_channels", "upsampling"),
}  # fmt: skip

# model.kwargs.encoder_depth: every smp encoder has 5 stages and takes a depth of 1 to 5.
ENCODER_DEPTHS = range(1, 6)
# The smp classes with one decoder block per encoder stage: len(decoder_channels) must equal
# encoder_depth (smp's defaults: 5 and these channels).
DECODER_BLOCK_ARCHS = ("Unet", "UnetPlusPlus", "MAnet")
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)

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
