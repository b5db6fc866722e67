"""The model in training: G and the discriminators, their optimizers, one iteration.

    model = Pix2Pix(cfg, split, device, amp="bf16")     # cfg: train.TrainConfig, split: batches.Split
    model.step(i)                                       # lr_at(cfg, i), batch i, optimize_parameters()
    model.take_losses()                                 # {"D", "G_GAN", "G_feat", "G_L1", "G_mask"} since the last call
    rgba = generate(G, skeletons_uint8, device)         # inference on uint8 batches, G in eval mode

The generator draws the dancer with her matte (networks: RGB + alpha), and what is judged is the
composite C = alpha G + (1 - alpha) B over the pair's background B (the clip's plate crop, or the
real frame T where there is no plate; engine.model.batches):
    L_G = GAN(D(skeleton, C)) + lambda_feat FM(D; C, T) + lambda_L1 |C - T| + lambda_mask |alpha - M|
    L_D = GAN(D(skeleton, T), real) + GAN(D(skeleton, C), fake)
D is pix2pixHD's: PatchGANs at `scales` scales, LSGAN, and FM the feature-matching L1 between D's
features on C and on T (lambda_feat 10, as there; no VGG term: no pretrained weights here). The
pix2pix L1 stays (lambda 100): on a short budget it is what draws the dancer first. With a plate
the room is exact, so L1 and GAN see only what differs from it: the dancer. The mask term makes the
alpha follow her and keeps it from collapsing to all 0 (C = B, nearly right over a plate) or all 1.
scales 1, feat_weight 0 and gan "vanilla" are the pix2pix objective, for side-by-side benchmarks.

The temporal model ("Everybody Dance Now") trains on consecutive pairs (t-1, t) of a clip: G draws
t-1 from its skeleton alone (a cold start), then t from its skeleton and that output, moved into
t's crop (engine.model.temporal), and a temporal D judges the two consecutive frames with their
skeletons (12 channels; the earlier one moved into the later crop likewise) against the real pair.
The losses above apply to frame t; the temporal D adds its GAN and FM terms. Unlike Everybody
Dance Now, frame t-1 is drawn without gradients and not trained on: its output is detached anyway
(as at inference, where it is a finished frame), and a second backward pass through G would cost
a third of the step for a sample the single-frame losses already cover. Instead a share COLD of
the frames t sees BLANK in place of t-1, so G still learns the cold start that opens a sequence.

Limb dropout (vid2vid): with probability `limb_dropout` a pair's skeleton loses one limb (the same
one in both frames of a temporal pair), redrawn before the jitter, so a joint the rig does not map
costs a limb, not the frame.

The rest is the paper's: Adam 2e-4, betas (0.5, 0.999), constant then linearly decayed lr. The
whole training split is held on the device as uint8; each step slices its batch there and jitters
it (engine.model.batches). On a GPU the networks run in channels_last, under bf16/fp16 autocast (a
GradScaler for fp16), optionally torch.compiled; under torchrun G and D are wrapped in DDP.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.model import batches, distributed, temporal
from engine.model.device import autocast
from engine.model.distributed import Dist
from engine.model.networks import Generator, MultiscaleDiscriminator, composite, feature_matching, gan_loss, split_rgba
from engine.model.tensors import to_model, to_uint8


CHANNELS = 4                                                # what training makes: RGB + alpha
LOSSES = ("D", "G_GAN", "G_feat", "G_L1", "G_mask")         # the curves of losses.jsonl
COLD = 0.2          # temporal model: share of training frames conditioned on BLANK, as a sequence's first is


def lr_at(cfg, step: int) -> float:
    """The paper's schedule: constant lr, then linear decay from step decay_from x steps to 0 at `steps`."""
    start = int(cfg.steps * cfg.decay_from)
    if step < start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - start))


class Discriminators(nn.Module):
    """What judges: `frame`, multi-scale on (skeleton, frame); `pair` (temporal model only), multi-scale on
    two consecutive (skeleton, frame)s from half resolution down (the frame D's coarser scales). One module,
    so one optimizer, one checkpoint entry and one DDP wrap."""

    def __init__(self, ndf: int, scales: int, temporal_model: bool):
        super().__init__()
        self.frame = MultiscaleDiscriminator(6, ndf, scales)
        self.pair = MultiscaleDiscriminator(12, ndf, max(1, scales - 1)) if temporal_model else None

    def forward(self, frames: torch.Tensor, pairs: torch.Tensor | None = None):
        if pairs is None:
            return self.frame(frames), None
        # The pair is judged from half resolution down: what flickers from frame to frame (the room, her
        # place and outline, her colours) shows there, and it costs a quarter of a full-size PatchGAN.
        pairs = F.avg_pool2d(pairs, 3, stride=2, padding=1, count_include_pad=False)
        return self.frame(frames), self.pair(pairs)


def _halves(outputs):
    """D's outputs on cat([a, b]) -> its outputs on a, on b."""
    return ([[f.chunk(2)[0] for f in scale] for scale in outputs],
            [[f.chunk(2)[1] for f in scale] for scale in outputs])


class Pix2Pix:
    """G, the discriminators, their optimizers and the training split on the device; `step(i)` does one iteration.

    cfg is a complete engine.model.train.TrainConfig. The bench uses this class directly; train.run
    adds checkpoints, validation and plots around it.
    """

    def __init__(self, cfg, data: batches.Split, device: torch.device, *, amp: str = "off",
                 compile: bool = False, dist_info: Dist | None = None):
        self.cfg, self.device, self.amp = cfg, device, amp
        self.dist = dist_info or Dist()
        self.temporal = bool(cfg.temporal)
        self.channels_last = device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = Generator(size=cfg.size, ngf=cfg.ngf, in_channels=temporal.in_channels(self.temporal),
                           out_channels=CHANNELS).to(device, memory_format=fmt)
        if self.temporal:
            temporal.start_as_single_frame(self.G)
        if cfg.size >> (cfg.scales - 1) < 32:          # the coarsest PatchGAN needs 32 px to see a patch
            raise UserError(f"--scales {cfg.scales} is too many for {cfg.size} px: the coarsest scale would be "
                            f"{cfg.size >> (cfg.scales - 1)} px (at least 32)")
        self.D = Discriminators(cfg.ndf, cfg.scales, self.temporal).to(device, memory_format=fmt)
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
        self.keypoints = data.keypoints                         # (N, J, 3) in pixels of S: redrawn with a limb dropped
        self.crops = torch.as_tensor(data.crops, dtype=torch.float32)
        self.previous = torch.as_tensor(data.previous, dtype=torch.long)
        # The samples a step draws from: every pair, or (temporal) every pair that has a predecessor.
        self.order = torch.arange(len(data)) if not self.temporal else torch.nonzero(self.previous >= 0)[:, 0]
        if self.temporal and not len(self.order):
            raise UserError("the dataset has no consecutive pairs (frames sampled one tick apart from one clip) "
                            "for the temporal model; train with --no-temporal")
        self.loss_sums = torch.zeros(len(LOSSES), device=device)   # since the last log
        self.loss_count = 0
        self.started_from = 0                                   # the step this process began at

    def _images(self, idx: torch.Tensor, limbs: np.ndarray) -> torch.Tensor:
        """uint8 (B, 10, S, S) of samples idx on the device, their skeletons redrawn where a limb is dropped
        (limbs[i] >= 0: batches.drop_limbs)."""
        x = self.images[idx.to(self.device)]
        rows = np.flatnonzero(limbs >= 0)
        if len(rows):
            from engine.data.skeleton import draw_batch
            kp = batches.drop_limbs(self.keypoints[idx[rows].numpy()], limbs[rows])
            drawn = torch.from_numpy(draw_batch(kp, self.cfg.size)).permute(0, 3, 1, 2).to(self.device)
            x[torch.as_tensor(rows, device=self.device), :3] = drawn
        return x

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's jittered batch at `step`, float (B, C, S, S): "skeleton", "real", "background" in [-1, 1],
        "mask" in [0, 1], "crops" (B, 3) after the jitter; for the temporal model the same of the pair's
        earlier frame as "skeleton0", "real0", ... (its crop "crops0")."""
        cfg, d = self.cfg, self.dist
        pos = batches.batch_indices(cfg.seed, step, len(self.order), cfg.batch, d.rank, d.world)
        idx = self.order[pos]
        g = torch.Generator().manual_seed((cfg.seed * 7_919 + step * 104_729 + d.rank) % (2**63))
        zoom = 1 + (cfg.jitter - 1) * torch.rand(cfg.batch, generator=g)
        shift = torch.rand(cfg.batch, 2, generator=g) * 2 - 1
        dropped = torch.rand(cfg.batch, generator=g) < cfg.limb_dropout
        cold = torch.rand(cfg.batch, generator=g) < COLD
        limbs = torch.where(dropped, torch.randint(len(batches.LIMBS), (cfg.batch,), generator=g), -1).numpy()
        parts = [(idx, "")] + ([(self.previous[idx], "0")] if self.temporal else [])
        x = torch.cat([self._images(i, limbs) for i, _ in parts], 1)       # (B, 10 | 20, S, S)
        x = batches.jitter(to_model(x), zoom, shift)       # one jitter for both frames of a pair
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = {}
        for k, (i, suffix) in enumerate(parts):
            y = x[:, 10 * k:10 * (k + 1)]
            crop = batches.jittered_crops(self.crops[i], zoom, shift)
            out.update({f"skeleton{suffix}": y[:, :3], f"real{suffix}": y[:, 3:6],
                        f"mask{suffix}": (y[:, 6:7] + 1) * 0.5, f"background{suffix}": y[:, 7:],
                        f"crops{suffix}": crop.to(self.device)})
        out["cold"] = cold.to(self.device)
        return out

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, step: int) -> None:
        """Training iteration `step`: its learning rate, its batch, then optimize_parameters()."""
        self.set_lr(lr_at(self.cfg, step))
        self.data = self.batch(step)
        self.optimize_parameters()

    # --- one iteration (names as in the pix2pix reference code) -----------------------------

    def _generate(self, x: torch.Tensor, background: torch.Tensor,
                  G: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G (default: the step's, DDP-wrapped) on its input -> (output (B, 4, S, S), composite over the
        background, alpha), in fp32."""
        with autocast(self.device, self.amp):
            out = (G or self.G_step)(x)
        out = out.float()
        return out, composite(out, background), split_rgba(out)[1]

    def forward(self) -> None:
        b = self.data
        if not self.temporal:
            _, self.fake, self.alpha = self._generate(b["skeleton"], b["background"])
            self.skeleton, self.real, self.mask = b["skeleton"], b["real"], b["mask"]
            return
        with torch.no_grad():                              # t-1: a cold start, not trained (see the docstring)
            # (G itself: a pass without gradients has nothing for DDP to reduce)
            out0, fake0, _ = self._generate(temporal.condition(b["skeleton0"], None, None, None), b["background0"], self.G)
        x1 = temporal.condition(b["skeleton"], out0, b["crops0"], b["crops"])
        cold = b["cold"][:, None, None, None]               # some frames see BLANK: G learns cold starts too
        x1 = torch.cat([x1[:, :temporal.SKELETON_CHANNELS], torch.where(cold, -1.0, x1[:, temporal.SKELETON_CHANNELS:])], 1)
        _, self.fake, self.alpha = self._generate(x1, b["background"])
        self.skeleton, self.real, self.mask = b["skeleton"], b["real"], b["mask"]
        # The pairs the temporal D judges: the earlier frame (and its skeleton) moved into the later crop.
        moved = lambda im: temporal.warp_previous(im, b["crops0"], b["crops"])  # noqa: E731
        skeletons = torch.cat([moved(b["skeleton0"]), b["skeleton"]], 1)
        self.fake_pair = torch.cat([skeletons, moved(fake0), self.fake], 1)
        self.real_pair = torch.cat([skeletons, moved(b["real0"]), b["real"]], 1)

    def backward_D(self) -> None:
        """D: real -> 1, fake -> 0, fakes and reals in one forward (instance norm keeps samples apart)."""
        gan = self.cfg.gan
        frames = torch.cat([torch.cat([self.skeleton, self.fake.detach()], 1), torch.cat([self.skeleton, self.real], 1)])
        pairs = torch.cat([self.fake_pair.detach(), self.real_pair]) if self.temporal else None
        with autocast(self.device, self.amp):
            frame_out, pair_out = self.D_step(frames, pairs)
            fake, real = _halves(frame_out)
            self.loss_D = 0.5 * (gan_loss(fake, False, gan) + gan_loss(real, True, gan))
            self.real_feats = (real, None)                 # what feature matching compares G's fakes with
            if self.temporal:
                fake, real = _halves(pair_out)
                self.loss_D = self.loss_D + 0.5 * (gan_loss(fake, False, gan) + gan_loss(real, True, gan))
                self.real_feats = (self.real_feats[0], real)
        self.scaler.scale(self.loss_D).backward()

    def backward_G(self) -> None:
        """G: fool D, match its features on the real frames, keep the composite near the real frame
        (lambda x L1) and the matte on her mask."""
        cfg = self.cfg
        with autocast(self.device, self.amp):
            frame_out, pair_out = self.D_for_G(torch.cat([self.skeleton, self.fake], 1),
                                               self.fake_pair if self.temporal else None)
        self.loss_G_GAN = gan_loss(frame_out, True, cfg.gan)
        self.loss_G_feat = feature_matching(frame_out, self.real_feats[0])
        if self.temporal:
            self.loss_G_GAN = self.loss_G_GAN + gan_loss(pair_out, True, cfg.gan)
            self.loss_G_feat = self.loss_G_feat + feature_matching(pair_out, self.real_feats[1])
        self.loss_G_L1 = (self.fake - self.real).abs().mean()
        self.loss_G_mask = (self.alpha - self.mask).abs().mean()
        loss = (self.loss_G_GAN + cfg.feat_weight * self.loss_G_feat + cfg.l1_weight * self.loss_G_L1
                + cfg.mask_weight * self.loss_G_mask)
        self.scaler.scale(loss).backward()

    def optimize_parameters(self) -> None:
        """Forward G; update D on (real, fake); update G on its losses with D frozen."""
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
        self.loss_sums += torch.stack([self.loss_D.detach(), self.loss_G_GAN.detach(), self.loss_G_feat.detach(),
                                       self.loss_G_L1.detach(), self.loss_G_mask.detach()]).float()
        self.loss_count += 1

    def take_losses(self) -> dict[str, float]:
        """Mean losses since the last call, over all ranks (one device sync; every rank calls it)."""
        means = distributed.mean_over_ranks(self.loss_sums / max(1, self.loss_count), self.dist)
        values = means.tolist()
        self.loss_sums.zero_()
        self.loss_count = 0
        return dict(zip(LOSSES, values))


@torch.no_grad()
def generate(G: Generator, skeletons: torch.Tensor, device: torch.device, batch: int = 16, amp: str = "off", *,
             previous: np.ndarray | None = None, crops: np.ndarray | None = None) -> torch.Tensor:
    """uint8 (N, 3, S, S) skeletons -> uint8 (N, C, S, S) on the CPU (RGBA, straight alpha, when C is 4), G in eval mode.

    A temporal G (7 input channels) goes frame by frame: frame i is conditioned on the output of frame
    previous[i] (batches.Split.previous; -1 or None: a cold start), moved from crops[previous[i]] into crops[i]."""
    was_training = G.training
    G.eval()
    out = []
    sequential = G.in_channels == temporal.INPUT_CHANNELS
    step = 1 if sequential else batch
    for i in range(0, len(skeletons), step):
        x = to_model(skeletons[i:i + step].to(device))
        if sequential:
            p = -1 if previous is None else int(previous[i])
            if p >= 0:
                crop = lambda j: torch.as_tensor(crops[j:j + 1], dtype=torch.float32, device=device)  # noqa: E731
                x = temporal.condition(x, to_model(out[p].to(device)), crop(p), crop(i))
            else:
                x = temporal.condition(x, None, None, None)
        with autocast(device, amp):
            y = G(x)
        out.append(to_uint8(y).cpu())
    G.train(was_training)
    if not out:
        return torch.zeros((0, G.out_channels, *skeletons.shape[2:]), dtype=torch.uint8)
    return torch.cat(out)
