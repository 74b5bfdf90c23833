"""Depth Anything V2 (DINOv2 ViT encoder + DPT head), state-dict compatible with the official checkpoints.

Re-implements https://github.com/DepthAnything/Depth-Anything-V2 (``depth_anything_v2/dpt.py`` and its
DINOv2 backbone, Apache-2.0) in one file. Module and parameter names follow the official code exactly
(``pretrained.*`` = DINOv2, ``depth_head.*`` = DPT head), so ``DepthAnythingV2("vits").load_state_dict(
torch.load("depth_anything_v2_vits.pth"), strict=True)`` works. The numerics follow it too (checked against
/work/shared/fixtures/dav2_vits by tests/test_dpt_fixture.py); the details that matter are commented.

- ``DepthAnythingV2``: the official model: normalised input Bx3xHxW (H, W multiples of 14) -> [B,H,W].
- ``image2tensor`` / ``infer_image``: the official pre/post-processing (uint8 image -> tensor -> depth map).
- ``dpt_vits`` / ``dpt_vitb`` / ``dpt_vitl``: registered project models (``DPTDepth``): float RGB 0..255
  in, Bx1xHxW relative inverse depth (disparity-like, >= 0) out.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visionlab.cfg import ConfigError
from visionlab.models.registry import register_model
from visionlab.models.segmentation import IMAGENET_MEAN, IMAGENET_STD, Normalized

PATCH = 14
POS_GRID = 37  # DINOv2 was trained at 518 px: 37x37 patch positions (+1 cls) = 1370 pos-embed rows

# the official ``model_configs`` (+ ViT sizes) and ``intermediate_layer_idx``
ENCODER_CONFIGS: dict[str, dict] = {
    "vits": dict(embed_dim=384, depth=12, num_heads=6, features=64, out_channels=[48, 96, 192, 384],
                 layers=[2, 5, 8, 11]),
    "vitb": dict(embed_dim=768, depth=12, num_heads=12, features=128, out_channels=[96, 192, 384, 768],
                 layers=[2, 5, 8, 11]),
    "vitl": dict(embed_dim=1024, depth=24, num_heads=16, features=256, out_channels=[256, 512, 1024, 1024],
                 layers=[4, 11, 17, 23]),
}
NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "mask_token")  # DINOv2 convention


# ---------------------------------------------------------------------------------------------- DINOv2


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h*w, C], row-major patches


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        # same maths as the official softmax(q * d**-0.5 @ k^T) @ v (measured 7e-6 apart), less memory
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU: the tanh approximation is off by 1e-3 at the output
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale; LayerNorm eps 1e-6 as in DINOv2."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT/14 without registers, as Depth Anything V2 builds it (``img_size=518``, flat ``blocks``)."""

    def __init__(self, embed_dim: int = 384, depth: int = 12, num_heads: int = 6):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID * POS_GRID, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused at inference; kept for strict loading
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # DINOv2's initialisation (matters only when training from scratch)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, n_tokens: int, height: int, width: int) -> torch.Tensor:
        """Pos-embed for an ``height x width`` input, resampled exactly as the official DINOv2 code does."""
        # python ints: under ONNX tracing the sizes are tensors, and interpolate's scale_factor must be floats (the
        # traced graph then holds the export size: `visionlab export` checks another size and falls back to
        # fixed H/W)
        n_tokens, height, width = int(n_tokens), int(height), int(width)
        if n_tokens - 1 == POS_GRID * POS_GRID and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, POS_GRID, POS_GRID, -1).permute(0, 3, 1, 2)
        # scale_factor (not size=) with a +0.1 offset, no antialias: PyTorch then maps source coordinates with
        # this factor, which shifts positions slightly even on an axis that stays 37 long. Using size= (timm)
        # changes the output by ~0.3.
        scale = ((height // PATCH + 0.1) / POS_GRID, (width // PATCH + 0.1) / POS_GRID)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        grid = grid.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[cls] + patch tokens + pos-embed: [B, 1 + h*w, C]."""
        B, _, H, W = x.shape
        if H % PATCH or W % PATCH:
            raise ValueError(f"DINOv2 input must be a multiple of {PATCH} px in height and width, got {H}x{W}")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        return x + self.interpolate_pos_encoding(x.shape[1], H, W)

    def get_intermediate_layers(self, x: torch.Tensor, layers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(patch tokens [B, h*w, C], cls token [B, C]) after blocks ``layers`` (0-based), each passed through
        the shared final ``norm`` (the head was trained on normed features: skipping it costs ~7 at output)."""
        x = self.prepare_tokens(x)
        outputs = []
        for i, block in enumerate(self.blocks[: max(layers) + 1]):  # later blocks feed nothing
            x = block(x)
            if i in layers:
                out = self.norm(x)
                outputs.append((out[:, 1:], out[:, 0]))
        return outputs


# ---------------------------------------------------------------------------------------------- DPT head


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))); no BatchNorm (``use_bn=False``), non-inplace ReLUs."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """(x0 [+ resConfUnit1(x1)]) -> resConfUnit2 -> bilinear upsample (align_corners=True) -> 1x1 out_conv."""

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)  # official spelling; unused in refinenet4 (one input)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        out = x0 if x1 is None else x0 + self.resConfUnit1(x1)
        out = self.resConfUnit2(out)
        resize = {"scale_factor": 2} if size is None else {"size": tuple(size)}
        out = F.interpolate(out, **resize, mode="bilinear", align_corners=True)
        return self.out_conv(out)


class DPTHead(nn.Module):
    """Reassemble 4 ViT token maps into a 4-level pyramid (strides 4, 8, 16, 32 px at patch 14), fuse top-down."""

    def __init__(self, in_channels: int, features: int, out_channels: list[int]):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()  # official grouping: keys depth_head.scratch.*
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), nn.ReLU(), nn.Identity()
        )

    def forward(self, tokens: list[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        s = self.scratch
        levels = []
        for i, x in enumerate(tokens):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            x = self.resize_layers[i](self.projects[i](x))
            levels.append(getattr(s, f"layer{i + 1}_rn")(x))
        l1, l2, l3, l4 = levels
        path_4 = s.refinenet4(l4, size=l3.shape[2:])
        path_3 = s.refinenet3(path_4, l3, size=l2.shape[2:])
        path_2 = s.refinenet2(path_3, l2, size=l1.shape[2:])
        path_1 = s.refinenet1(path_2, l1)
        out = s.output_conv1(path_1)
        out = F.interpolate(out, (patch_h * PATCH, patch_w * PATCH), mode="bilinear", align_corners=True)
        return s.output_conv2(out)


class DepthAnythingV2(nn.Module):
    """The official model: ImageNet-normalised RGB [B,3,H,W] (H, W multiples of 14) -> relative depth [B,H,W]."""

    def __init__(self, encoder: str = "vits"):
        super().__init__()
        if encoder not in ENCODER_CONFIGS:
            raise ConfigError(f"unknown Depth Anything V2 encoder '{encoder}': expected one of {list(ENCODER_CONFIGS)}")
        cfg = ENCODER_CONFIGS[encoder]
        self.encoder = encoder
        self.intermediate_layer_idx = cfg["layers"]
        self.pretrained = DinoVisionTransformer(cfg["embed_dim"], cfg["depth"], cfg["num_heads"])
        self.depth_head = DPTHead(cfg["embed_dim"], cfg["features"], cfg["out_channels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch_h, patch_w = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        feats = self.pretrained.get_intermediate_layers(x, self.intermediate_layer_idx)
        depth = self.depth_head([patch for patch, _cls in feats], patch_h, patch_w)  # use_clstoken=False
        return F.relu(depth).squeeze(1)


# ---------------------------------------------------------------------------------------------- pre/post


def image2tensor(image: np.ndarray, input_size: int = 518, *,
                 bgr: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 HxWx3 image -> (normalised float32 [1,3,H',W'], (h, w)), as the official ``image2tensor``.

    Takes **RGB** (what visionlab.data.io reads) unless ``bgr=True`` (``cv2.imread`` output, what the official
    code takes). Resizing is cv2 INTER_CUBIC on the float64 [0,1] image: resizing the uint8 image instead
    (or with PIL) moves the input by 0.57.
    """
    import cv2

    from visionlab.data.transforms import aspect_size

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    rgb = (image[..., ::-1] if bgr else image) / 255.0  # float64
    new_h, new_w = aspect_size(h, w, input_size, PATCH)
    rgb = cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    rgb = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32))
    return tensor.unsqueeze(0), (h, w)


@torch.no_grad()
def infer_image(model: nn.Module, image: np.ndarray, input_size: int = 518, *, bgr: bool = False) -> np.ndarray:
    """Depth map [h, w] float32 at the image's own size, as the official ``infer_image``.

    ``model``: a ``DepthAnythingV2`` or a ``DPTDepth`` (its inner model is used, so the official float64
    preprocessing is kept). ``image``: uint8 HxWx3, RGB unless ``bgr=True``.
    """
    net = model.net if isinstance(model, DPTDepth) else model
    x, (h, w) = image2tensor(image, input_size, bgr=bgr)
    x = x.to(next(net.parameters()).device)
    depth = net(x)
    depth = F.interpolate(depth[:, None], (h, w), mode="bilinear", align_corners=True)[0, 0]
    return depth.cpu().numpy()


# ---------------------------------------------------------------------------------------------- project models


class DPTDepth(Normalized):
    """Depth Anything V2 for visionlab: float RGB 0..255 [B,3,H,W] -> relative inverse depth [B,1,H,W] (>= 0).

    H and W must be multiples of ``input_multiple`` (14). Official weights go into ``.net`` (a
    ``DepthAnythingV2``): see ``load_official_state_dict``.
    """

    input_multiple: int = PATCH

    def __init__(self, encoder: str = "vits"):
        super().__init__(DepthAnythingV2(encoder), IMAGENET_MEAN, IMAGENET_STD)
        self.input_multiple = PATCH  # set after Normalized.__init__, which sets its own default

    @property
    def encoder(self) -> DinoVisionTransformer:
        return self.net.pretrained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).unsqueeze(1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 4 intermediate DINOv2 patch-feature maps [B, C, H/14, W/14] (after the final norm) of RGB 0..255."""
        x = (x - self.mean) / self.std
        h, w = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        feats = self.net.pretrained.get_intermediate_layers(x, self.net.intermediate_layer_idx)
        return [t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], h, w) for t, _cls in feats]

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in ``named_parameters()``) that get no weight decay: pos/cls/mask embeddings."""
        return {f"net.pretrained.{name}" for name in NO_WEIGHT_DECAY}


def load_official_state_dict(model: DPTDepth, state_dict: dict[str, torch.Tensor]) -> None:
    """Load an official Depth-Anything-V2 state dict (``pretrained.*``, ``depth_head.*``) strictly."""
    model.net.load_state_dict(state_dict, strict=True)


@register_model("depth")
def dpt_vits() -> nn.Module:
    """Depth Anything V2 Small (24.8M parameters)."""
    return DPTDepth("vits")


@register_model("depth")
def dpt_vitb() -> nn.Module:
    """Depth Anything V2 Base (97.5M parameters)."""
    return DPTDepth("vitb")


@register_model("depth")
def dpt_vitl() -> nn.Module:
    """Depth Anything V2 Large (335.3M parameters)."""
    return DPTDepth("vitl")
