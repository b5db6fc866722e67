"""Training pictures: the loss curves (losses.png) and the sample grids (skeleton | real | generated | alpha).

    loss_plot(losses, metrics, "RUN/losses.png")     # rows from losses.jsonl and metrics.jsonl
    save_grid(grid(skeletons, reals, fakes, alphas), "RUN/samples/step_000500.png")   # any number of columns

matplotlib runs on the Agg backend (no display); every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.atomic import atomic_file

# The three curves the original pix2pix project plotted, pix2pixHD's feature matching and the matte's,
# as logged by train.py (engine.model.pix2pix.LOSSES); a run lacking one (older objectives) skips it.
LOSS_CURVES = (("D", "D (real + fake) / 2"), ("G_GAN", "G adversarial"), ("G_feat", "G feature matching (unweighted)"),
               ("G_L1", "G L1 (unweighted)"), ("G_mask", "G mask L1 (unweighted)"))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average with a growing window at the start (same length as values)."""
    values = np.asarray(values, np.float64)
    if window <= 1 or len(values) < 2:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    n = np.minimum(np.arange(1, len(values) + 1), window)
    return (c[1:] - c[np.arange(1, len(values) + 1) - n]) / n


def loss_plot(losses: list[dict], metrics: list[dict], path: str | Path) -> None:
    """Write losses.png: the losses over steps (raw faint, smoothed bold), and the val curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    if losses:
        steps = np.array([r["step"] for r in losses])
        window = max(1, len(losses) // 50)
        for key, label in LOSS_CURVES:
            values = np.array([r.get(key, np.nan) for r in losses], np.float64)
            if np.isnan(values).all() or not np.nanmax(values) > 0:   # absent (older runs), or off (log scale)
                continue
            line, = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values, window), color=line.get_color(), label=label)
        ax.set_yscale("log")
        # Plain tick labels: the default log formatter goes through mathtext, slow and noisy.
        from matplotlib.ticker import LogFormatter
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("step")
    ax.set_title("training losses (smoothed)")
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(loc="upper right")

    ax = axes[1]
    if metrics:
        steps = np.array([r["step"] for r in metrics])
        ax.plot(steps, [r["ssim"] for r in metrics], "o-", label="SSIM", color="tab:green")
        ax.plot(steps, [r["l1"] for r in metrics], "s-", label="L1", color="tab:red")
        if any("alpha_iou" in r for r in metrics):
            ax.plot(steps, [r.get("alpha_iou", np.nan) for r in metrics], "d-", label="alpha IoU", color="tab:purple")
        ax.set_ylim(0, 1)
        ax.set_ylabel("SSIM, L1, IoU (0-1)")
        twin = ax.twinx()
        twin.plot(steps, [r["psnr"] for r in metrics], "^--", label="PSNR (dB)", color="tab:blue")
        twin.set_ylabel("PSNR (dB)")
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    ax.set_xlabel("step")
    ax.set_title("validation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def grid(*columns: np.ndarray, max_rows: int = 4, min_panel: int = 128) -> np.ndarray:
    """Rows of side-by-side panels (skeleton | real | generated | ...), uint8 (N, S, S, 3) each -> one RGB image.

    Small images are enlarged (nearest neighbour, whole pixels) to at least `min_panel` px a panel.
    """
    n = min(len(columns[0]), max_rows)
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(n)]
    image = np.concatenate(rows, axis=0)
    k = max(1, -(-min_panel // columns[0].shape[1])) if n else 1
    return image.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else image


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an RGB uint8 image as PNG, atomically."""
    import cv2
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.tobytes())


save_grid = save_png
