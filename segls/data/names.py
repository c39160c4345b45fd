"""The data choices a config may name, without importing the code that reads the data.

`segls.config` imports these to check ``data.format``, ``data.cityscapes_labels`` and
``data.scaling``; `segls.data.layouts` and `segls.data.transforms` implement them.
"""

LAYOUT_NAMES = ("folder", "voc", "cityscapes", "ade20k")  # data.format: keys of layouts.LAYOUTS
CITYSCAPES_LABELS = ("labelTrainIds", "labelIds")  # the mask files data.cityscapes_labels names
SCALINGS = ("dtype", "percentile")  # data.scaling: by the dtype maximum, or per image
