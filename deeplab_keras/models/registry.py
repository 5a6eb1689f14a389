"""The named DeepLab models: one typed spec per name (an explicit registry)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What distinguishes one DeepLab model from another.

    Attributes:
      name: registry name, also the default Keras model name.
      backbone: "vgg16" or "resnet101".
      head: "largefov", "vgg_aspp" or "resnet_aspp".
      rates: dilation rate(s) of the head's 3x3 convs, at output stride 8.
      paper: where the configuration comes from.
    """

    name: str
    backbone: str
    head: str
    rates: tuple
    paper: str


_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vgg16_largefov", "vgg16", "largefov", (12,),
            "DeepLab v1 (Chen et al., ICLR 2015), Sec. 4.1 'DeepLab-LargeFOV'",
        ),
        ModelSpec(
            "vgg16_aspp_s", "vgg16", "vgg_aspp", (2, 4, 8, 12),
            "DeepLab v2 (Chen et al., TPAMI 2017), Sec. 4.1 'ASPP-S'",
        ),
        ModelSpec(
            "vgg16_aspp_l", "vgg16", "vgg_aspp", (6, 12, 18, 24),
            "DeepLab v2 (Chen et al., TPAMI 2017), Sec. 4.1 'ASPP-L'",
        ),
        ModelSpec(
            "resnet101_aspp", "resnet101", "resnet_aspp", (6, 12, 18, 24),
            "DeepLab v2 (Chen et al., TPAMI 2017), Sec. 4.3 ResNet-101 + ASPP-L",
        ),
    )
}


def available_models():
    """Names accepted by `build_model`, sorted.

    Example:
      >>> available_models()
      ['resnet101_aspp', 'vgg16_aspp_l', 'vgg16_aspp_s', 'vgg16_largefov']
    """
    return sorted(_SPECS)


def get_spec(name):
    """The `ModelSpec` of `name`; ValueError naming the name and the choices otherwise."""
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(
            f"Unknown model name. Expected one of {available_models()}. Received: name={name!r}"
        )
    return _SPECS[name]
