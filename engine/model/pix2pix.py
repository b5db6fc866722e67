"""The pix2pix model in training: G and D, their optimizers, one iteration as the paper writes it.

    model = Pix2Pix(cfg, split, device, amp="bf16")     # cfg: train.TrainConfig, split: batches.Split
    model.step(i)                                       # lr_at(cfg, i), batch i, optimize_parameters()
    model.take_losses()                                 # {"D", "G_GAN", "G_L1", "G_mask"} means since the last call
    rgba = generate(G, skeletons_uint8, device)         # inference on uint8 batches, G in eval mode

The generator draws the dancer with her matte (networks: RGB + alpha), and what is judged is the
composite C = alpha G + (1 - alpha) B over the pair's background B (the clip's plate crop, or the
real frame T where there is no plate; engine.model.batches):
    L_G = GAN(D(skeleton, C)) + lambda_L1 |C - T| + lambda_mask |alpha - M|      (M: the stored mask)
    L_D = GAN(D(skeleton, T), real) + GAN(D(skeleton, C), fake)
With a plate, the room is exact and the L1 and GAN terms see only what differs from it: the
dancer, where the colour is judged. The mask term makes the alpha follow her and keeps it from
collapsing to all 0 (then C = B, which a plate makes nearly right) or all 1 (then G must paint
the room). The rest is the paper's: vanilla BCE-with-logits (or LSGAN), lambda_L1 100, Adam 2e-4
with betas (0.5, 0.999). The whole training split is held on the device as uint8; each step
slices its batch there and jitters it (engine.model.batches). On a GPU the networks run in
channels_last, under bf16/fp16 autocast (a GradScaler for fp16), optionally torch.compiled; under
torchrun G and D are wrapped in DDP (engine.model.distributed).
"""

from __future__ import annotations

import torch

from engine.model import batches, distributed
from engine.model.device import autocast
from engine.model.distributed import Dist
from engine.model.networks import Discriminator, Generator, composite, gan_loss, split_rgba
from engine.model.tensors import to_model, to_uint8


CHANNELS = 4                                       # what training makes: RGB + alpha
LOSSES = ("D", "G_GAN", "G_L1", "G_mask")          # the curves of losses.jsonl


def lr_at(cfg, step: int) -> float:
    """The paper's schedule: constant lr, then linear decay from step decay_from x steps to 0 at `steps`."""
    start = int(cfg.steps * cfg.decay_from)
    if step < start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - start))


class Pix2Pix:
    """G, D, their optimizers and the training split on the device; `step(i)` does one iteration.

    cfg is a complete engine.model.train.TrainConfig (size, ngf, ndf, batch, lr, betas, gan,
    l1_weight, mask_weight, jitter, seed). The bench uses this class directly; train.run adds checkpoints,
    validation and plots around it.
    """

    def __init__(self, cfg, data: batches.Split, device: torch.device, *, amp: str = "off",
                 compile: bool = False, dist_info: Dist | None = None):
        self.cfg, self.device, self.amp = cfg, device, amp
        self.dist = dist_info or Dist()
        self.channels_last = device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = Generator(size=cfg.size, ngf=cfg.ngf, out_channels=CHANNELS).to(device, memory_format=fmt)
        self.D = Discriminator(ndf=cfg.ndf).to(device, memory_format=fmt)
        # Fused Adam: one kernel for all parameters (3x faster than the per-tensor loop on CPU too).
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
        self.opt_G = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **adam)
        self.scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10, enabled=amp == "fp16")  # 2^16 overflows for steps
        # What the step calls: DDP wrappers (one forward and one backward each per step), and D
        # unwrapped for the generator's loss, whose D gradients are never wanted or all-reduced.
        self.G_step = distributed.wrap(self.G, device, self.dist)
        self.D_step = distributed.wrap(self.D, device, self.dist)
        self.D_for_G = self.D
        if compile:
            self.G_step, self.D_step, self.D_for_G = (torch.compile(m) for m in (self.G_step, self.D_step, self.D_for_G))
        # (N, 10, S, S) uint8 on the device: skeleton, frame, mask, background stacked, sliced per step
        self.images = torch.cat([data.skeletons, data.frames, data.masks, data.backgrounds], 1).to(device)
        self.n = len(data)
        self.loss_sums = torch.zeros(4, device=device)          # D, G_GAN, G_L1, G_mask since the last log
        self.loss_count = 0
        self.started_from = 0                                   # the step this process began at

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's jittered batch at `step`: skeleton, frame, mask, background, float (B, C, S, S).

        Skeleton, frame and background in [-1, 1]; the mask in [0, 1]."""
        cfg, d = self.cfg, self.dist
        idx = batches.batch_indices(cfg.seed, step, self.n, cfg.batch, d.rank, d.world).to(self.device)
        x = to_model(self.images[idx])                                               # (B, 10, S, S)
        g = torch.Generator().manual_seed((cfg.seed * 7_919 + step * 104_729 + d.rank) % (2**63))
        zoom = 1 + (cfg.jitter - 1) * torch.rand(cfg.batch, generator=g)
        shift = torch.rand(cfg.batch, 2, generator=g) * 2 - 1
        x = batches.jitter(x, zoom, shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x[:, :3], x[:, 3:6], (x[:, 6:7] + 1) * 0.5, x[:, 7:]

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, step: int) -> None:
        """Training iteration `step`: its learning rate, its batch, then optimize_parameters()."""
        self.set_lr(lr_at(self.cfg, step))
        self.skeleton, self.real, self.mask, self.background = self.batch(step)
        self.optimize_parameters()

    # --- the paper's iteration (names as in the pix2pix reference code) -------------------------

    def forward(self) -> None:
        with autocast(self.device, self.amp):
            out = self.G_step(self.skeleton)                       # (B, 4, S, S): RGB + alpha
        out = out.float()
        self.alpha = split_rgba(out)[1]                            # (B, 1, S, S) in [0, 1]
        self.fake = composite(out, self.background)                # (B, 3, S, S): what D and L1 judge

    def backward_D(self) -> None:
        """D: real pairs -> 1, fake pairs -> 0, in one forward (instance norm keeps samples apart)."""
        with autocast(self.device, self.amp):
            logits = self.D_step(torch.cat([self.skeleton, self.skeleton]),
                                 torch.cat([self.fake.detach(), self.real]))
            fake_logits, real_logits = logits.chunk(2)
            self.loss_D = 0.5 * (gan_loss(fake_logits, False, self.cfg.gan) + gan_loss(real_logits, True, self.cfg.gan))
        self.scaler.scale(self.loss_D).backward()

    def backward_G(self) -> None:
        """G: fool D, keep the composite near the real frame (lambda x L1) and the matte on her mask."""
        with autocast(self.device, self.amp):
            self.loss_G_GAN = gan_loss(self.D_for_G(self.skeleton, self.fake), True, self.cfg.gan)
        self.loss_G_L1 = (self.fake - self.real).abs().mean()
        self.loss_G_mask = (self.alpha - self.mask).abs().mean()
        loss = self.loss_G_GAN + self.cfg.l1_weight * self.loss_G_L1 + self.cfg.mask_weight * self.loss_G_mask
        self.scaler.scale(loss).backward()

    def optimize_parameters(self) -> None:
        """Forward G; update D on (real, fake); update G on GAN + lambda L1 with D frozen."""
        self.forward()
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        self.backward_D()
        self.scaler.step(self.opt_D)

        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        self.backward_G()
        self.scaler.step(self.opt_G)
        self.scaler.update()
        self.loss_sums += torch.stack([self.loss_D.detach(), self.loss_G_GAN.detach(), self.loss_G_L1.detach(),
                                       self.loss_G_mask.detach()]).float()
        self.loss_count += 1

    def take_losses(self) -> dict[str, float]:
        """Mean D, G_GAN, G_L1, G_mask since the last call, over all ranks (one device sync; every rank calls it)."""
        means = distributed.mean_over_ranks(self.loss_sums / max(1, self.loss_count), self.dist)
        values = means.tolist()
        self.loss_sums.zero_()
        self.loss_count = 0
        return dict(zip(LOSSES, values))


@torch.no_grad()
def generate(G: Generator, skeletons: torch.Tensor, device: torch.device, batch: int = 16,
             amp: str = "off") -> torch.Tensor:
    """uint8 (N, 3, S, S) skeletons -> uint8 (N, C, S, S) on the CPU (RGBA, straight alpha, when C is 4), G in eval mode."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(skeletons), batch):
        x = to_model(skeletons[i:i + batch].to(device))
        with autocast(device, amp):
            y = G(x)
        out.append(to_uint8(y).cpu())
    G.train(was_training)
    if not out:
        return torch.zeros((0, G.out_channels, *skeletons.shape[2:]), dtype=torch.uint8)
    return torch.cat(out)
