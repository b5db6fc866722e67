"""The networks: the pix2pix U-Net generator and the pix2pixHD multi-scale PatchGAN discriminators.

After Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (2017), and
the reference code (junyanz/pytorch-CycleGAN-and-pix2pix); the discriminators after Wang et al.,
"High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs" (pix2pixHD, 2018):
the same 70x70 PatchGAN at 2-3 scales, each on the input average-pooled once more, and their
intermediate features for the feature-matching loss. Two deliberate differences from pix2pix:
- Instance norm instead of batch norm. The paper trains with batch size 1 and normalizes with the
  test batch's own statistics, which is instance norm; naming it so keeps a frame's output
  independent of whatever else the server batched with it, at any batch size.
- Dropout only while training: the served dancer is deterministic, so frames do not flicker.

Usage:
    G = Generator(size=256, ngf=64, out_channels=4)   # skeleton (B, 3, H, W) in [-1, 1] -> (B, 4, H, W) in [-1, 1]
    rgb, alpha = split_rgba(G(skeleton))              # colour in [-1, 1], the dancer's matte in [0, 1]
    frame = composite(G(skeleton), background)        # the dancer over a background: what D and L1 judge
    D = MultiscaleDiscriminator(in_channels=6, ndf=64, scales=2)
    feats = D(torch.cat([skeleton, frame], 1))        # per scale: each layer's features, the patch logits last
    gan_loss(feats, real=True, kind="lsgan")          # the adversarial loss, averaged over the scales
    feature_matching(fake_feats, real_feats)          # pix2pixHD's L1 between D's features on fake and real

A temporal generator (engine.model.temporal) takes 7 input channels: the skeleton and its previous
output; its temporal discriminator is a MultiscaleDiscriminator on two consecutive frames and their
skeletons (12 channels).

The fourth output channel is the alpha matte, alpha = (tanh + 1) / 2: the same tanh as the colour,
so `tensors.to_uint8` turns all four channels into an RGBA image with straight alpha (0-255) in one
step, and every backend (torch, OpenVINO) serves it unchanged. Runs from before mattes have three
output channels (config.json "channels", 3 when absent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GAN_LOSSES = ("vanilla", "lsgan")


def levels(size: int) -> int:
    """Down/up levels for a square image: log2(size), down to 1x1 (8 at 256 px, 6 at 64, 9 at 512)."""
    n = int(math.log2(size))
    if size < 16 or 2**n != size:
        raise ValueError(f"image size must be a power of two >= 16, got {size}")
    return n


class UNetBlock(nn.Module):
    """One level of the U-Net: down, the inner levels, up, with the input concatenated on (skip)."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None = None, *,
                 in_channels: int | None = None, outermost: bool = False, dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        in_channels = in_channels or outer
        down = [nn.Conv2d(in_channels, inner, 4, 2, 1, bias=False)]
        if outermost:                               # 3 -> ngf, no norm; ngf*2 -> 3 with tanh
            layers = down + [submodule, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif submodule is None:                     # innermost: down to 1x1, no norm there
            layers = [nn.LeakyReLU(0.2, True), *down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.InstanceNorm2d(outer, affine=True)]
        else:
            layers = [nn.LeakyReLU(0.2, True), *down, nn.InstanceNorm2d(inner, affine=True), submodule, nn.ReLU(True),
                      nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False), nn.InstanceNorm2d(outer, affine=True)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)    # (B, 2C, H, W): the skip connection


class Generator(nn.Module):
    """U-Net with log2(size) levels: ngf, 2ngf, 4ngf, then 8ngf down to 1x1; dropout on the middle 8ngf levels."""

    def __init__(self, size: int = 256, ngf: int = 64, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.size, self.ngf, self.in_channels, self.out_channels = size, ngf, in_channels, out_channels
        n = levels(size)
        block = UNetBlock(ngf * 8, ngf * 8)                          # innermost
        for i in range(n - 5):                                       # the other 8ngf levels
            block = UNetBlock(ngf * 8, ngf * 8, block, dropout=True)
        block = UNetBlock(ngf * 4, ngf * 8, block)
        block = UNetBlock(ngf * 2, ngf * 4, block)
        block = UNetBlock(ngf, ngf * 2, block)
        self.model = UNetBlock(out_channels, ngf, block, in_channels=in_channels, outermost=True)
        init_weights(self)

    def forward(self, skeleton: torch.Tensor) -> torch.Tensor:
        return self.model(skeleton)


class Discriminator(nn.Module):
    """70x70 PatchGAN on stacked (condition, image) channels: each output logit judges one 70x70 patch."""

    def __init__(self, ndf: int = 64, in_channels: int = 6, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for i in range(1, n_layers + 1):
            prev, mult = mult, min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                       nn.InstanceNorm2d(ndf * mult, affine=True), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the output of each LeakyReLU block (the features), then the patch logits."""
        feats = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return feats + [x]


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's D: `scales` PatchGANs, the k-th on the input average-pooled k times (3x3, stride 2).

    The coarse ones see the whole figure at once (a 70 px patch at 1/4 scale spans 280 px), the
    finest one the texture; a single scale is the pix2pix PatchGAN."""

    def __init__(self, in_channels: int, ndf: int = 64, scales: int = 2, n_layers: int = 3):
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        self.scales = nn.ModuleList(Discriminator(ndf, in_channels, n_layers) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def split_rgba(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-channel output (B, 4, H, W) in [-1, 1] -> colour (B, 3, H, W) in [-1, 1], alpha (B, 1, H, W) in [0, 1]."""
    return y[:, :3], (y[:, 3:4] + 1) * 0.5


def composite(y: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The generated dancer (B, 4, H, W) over a background (B, 3, H, W), both in [-1, 1]: straight alpha-over."""
    rgb, alpha = split_rgba(y)
    return alpha * rgb + (1 - alpha) * background


def gan_loss(outputs: list[list[torch.Tensor]], real: bool, kind: str = "lsgan") -> torch.Tensor:
    """The adversarial loss of a MultiscaleDiscriminator's patch logits (the last output of each scale)
    against all-real (1) or all-fake (0) targets, averaged over the scales.

    "lsgan": least squares (Mao et al. 2017), pix2pixHD's; "vanilla": pix2pix's binary cross-entropy
    on the logits. Computed in fp32 whatever autocast produced.
    """
    losses = []
    for feats in outputs:
        logits = feats[-1].float()
        target = torch.full_like(logits, 1.0 if real else 0.0)
        losses.append(F.mse_loss(logits, target) if kind == "lsgan" else F.binary_cross_entropy_with_logits(logits, target))
    return torch.stack(losses).mean()


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """pix2pixHD's feature-matching loss: L1 between D's intermediate features on the generated and the
    real pairs (real detached), each layer weighted 4 / (layers + 1) and each scale 1 / scales, as there."""
    total = fake[0][0].new_zeros((), dtype=torch.float32)
    for f_scale, r_scale in zip(fake, real):
        layers = len(f_scale) - 1                     # the features, not the logits
        for f, r in zip(f_scale[:-1], r_scale[:-1]):
            total = total + (4.0 / (layers + 1)) / len(fake) * F.l1_loss(f.float(), r.detach().float())
    return total


def init_weights(net: nn.Module) -> None:
    """The paper's init: conv weights ~ N(0, 0.02); norm scales ~ N(1, 0.02); biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
