"""pix2pix networks: the U-Net generator and the 70x70 PatchGAN discriminator, in one readable file.

After Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (2017), and
the reference code (junyanz/pytorch-CycleGAN-and-pix2pix). Two deliberate differences:
- Instance norm instead of batch norm. The paper trains with batch size 1 and normalizes with the
  test batch's own statistics, which is instance norm; naming it so keeps a frame's output
  independent of whatever else the server batched with it, at any batch size.
- Dropout only while training: the served dancer is deterministic, so frames do not flicker.

Usage:
    G = Generator(size=256, ngf=64, out_channels=4)   # skeleton (B, 3, H, W) in [-1, 1] -> (B, 4, H, W) in [-1, 1]
    rgb, alpha = split_rgba(G(skeleton))              # colour in [-1, 1], the dancer's matte in [0, 1]
    frame = composite(G(skeleton), background)        # the dancer over a background: what D and L1 judge
    D = Discriminator(ndf=64)            # (skeleton, frame) -> (B, 1, H/8 - 2, W/8 - 2) logits
    gan_loss(D(skeleton, frame), real=True, kind="vanilla")   # the adversarial loss on those logits

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
        self.size, self.ngf, self.out_channels = size, ngf, out_channels
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
    """70x70 PatchGAN conditioned on the skeleton: each output logit judges one 70x70 patch."""

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

    def forward(self, skeleton: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([skeleton, frame], 1))


def split_rgba(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-channel output (B, 4, H, W) in [-1, 1] -> colour (B, 3, H, W) in [-1, 1], alpha (B, 1, H, W) in [0, 1]."""
    return y[:, :3], (y[:, 3:4] + 1) * 0.5


def composite(y: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The generated dancer (B, 4, H, W) over a background (B, 3, H, W), both in [-1, 1]: straight alpha-over."""
    rgb, alpha = split_rgba(y)
    return alpha * rgb + (1 - alpha) * background


def gan_loss(logits: torch.Tensor, real: bool, kind: str = "vanilla") -> torch.Tensor:
    """The adversarial loss of D's patch logits against all-real (1) or all-fake (0) targets.

    "vanilla": the paper's, binary cross-entropy on the logits; "lsgan": least squares (Mao et al.
    2017). Computed in fp32 whatever autocast produced.
    """
    logits = logits.float()
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


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
