"""Every registered segmentation model builds, takes 0..255 RGB and returns 8-category logits at input size."""

from __future__ import annotations

import pytest
import torch

from visionlab.models import segmentation  # noqa: F401
from visionlab.models.registry import create_model, list_models


@pytest.mark.parametrize("name", list_models("segment"))
def test_model_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=8).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96) * 255)
    assert out.shape == (1, 8, 64, 96) and torch.isfinite(out).all()


def test_generic_fpn_takes_any_timm_encoder() -> None:
    model = create_model("fpn", num_classes=8, encoder="mobilenetv3_small_100").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64) * 255).shape == (2, 8, 64, 64)


def test_unknown_encoder_is_a_clear_error() -> None:
    from visionlab.cfg import ConfigError

    with pytest.raises(ConfigError, match="not_a_net"):
        create_model("fpn", num_classes=8, encoder="not_a_net")


def test_models_normalise_their_input() -> None:
    """The TF EfficientNet-Lite recipe expects [-1, 1]; the others ImageNet mean/std: both from 0..255 input.
    A forward of 0..255 pixels equals the inner network on the hand-normalised pixels."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 255
    for name, expected in (("fpn_efficientnet_lite0", x / 127.5 - 1),
                           ("unet_mini", (x / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))):
        model = create_model(name, num_classes=8).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), model.net(expected), atol=1e-4), name
