"""Test helper for training and evaluation: a small dataset folder, and a CLI launcher for subprocesses.

    ds = tiny_dataset(tmp_path_factory, pose_model)   # built once per session (cached on disk)
    python -m tests.tiny_dataset train DS --out RUN   # = `pix2dance ...`, usable under torchrun

The dataset is built by `engine.dataset.build` from real video (../shared/data/video/dancer_room.mp4
at 64 px). Until that module exists, `write_synthetic` writes a folder in exactly the documented
format (docs/architecture.md) from drawn skeletons of a jittered standing pose, with "frames"
painted as thick coloured limbs on a textured background; `install_fallback` then gives
`engine.dataset` a `load_pairs` that reads it. That fallback lives only here, never in engine/.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

SIZE = 64
VIDEO = "video/dancer_room.mp4"
_CACHE: dict[str, Path] = {}


def have_real_dataset_builder() -> bool:
    try:
        from engine import dataset
    except ImportError:
        return False
    return hasattr(dataset, "build") and hasattr(dataset, "load_pairs")


def _read_png(path: Path) -> np.ndarray:
    import cv2
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return image[..., ::-1].copy()


def load_pairs(root, split):
    """Fallback reader of the documented dataset layout: (skeletons, frames, keypoints)."""
    root = Path(root)
    info = json.loads((root / "dataset.json").read_text())
    n, size = info["counts"][split], info["size"]
    skeletons = np.zeros((n, size, size, 3), np.uint8)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        skeletons[i] = _read_png(root / split / "skeleton" / f"{i:06d}.png")
        frames[i] = _read_png(root / split / "frame" / f"{i:06d}.png")
    npz = np.load(root / "keypoints.npz")
    sel = npz["split"] == (0 if split == "train" else 1)
    order = np.argsort(npz["index"][sel])
    return skeletons, frames, npz["keypoints"][sel][order].astype(np.float32)


def install_fallback() -> None:
    """Give the process an `engine.dataset.load_pairs` when the real module has not landed yet."""
    if have_real_dataset_builder():
        return
    try:
        from engine import dataset as module
    except ImportError:
        module = types.ModuleType("engine.dataset")
        sys.modules["engine.dataset"] = module
        import engine
        engine.dataset = module
    if not hasattr(module, "load_pairs"):
        module.load_pairs = load_pairs


def _pose(rng: np.random.Generator, size: int) -> np.ndarray:
    from engine.joints import INDEX
    from tests.conftest import standing_pose
    kp = standing_pose(size)
    kp[:, 0] += rng.uniform(-0.12, 0.12) * size                   # sway
    kp[:, 1] += rng.uniform(-0.04, 0.04) * size
    for side in ("left", "right"):                                # arms up and down
        lift = rng.uniform(-0.25, 0.25) * size
        kp[INDEX[f"{side}_elbow"], 1] -= lift / 2
        kp[INDEX[f"{side}_wrist"], 1] -= lift
    return kp


def _paint(kp: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 'photo' of the pose: a room-like background and thick limbs in clothing colours."""
    import cv2
    from engine.joints import BONE_INDEX, VISIBLE
    y = np.linspace(0, 1, size)[:, None, None]
    frame = (np.array([200, 190, 170]) * (1 - y) + np.array([120, 100, 80]) * y).repeat(size, 1)
    frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
    width = max(3, size // 14)
    for a, b in BONE_INDEX:
        if kp[a, 2] >= VISIBLE and kp[b, 2] >= VISIBLE:
            colour = (40, 40, 140) if a >= 8 or b >= 8 else (220, 60, 60)   # trousers / shirt
            cv2.line(frame, tuple(int(v) for v in kp[a, :2]), tuple(int(v) for v in kp[b, :2]), colour, width, cv2.LINE_AA)
    head = kp[0, :2].astype(int)
    cv2.circle(frame, tuple(int(v) for v in head), max(3, size // 16), (230, 180, 150), -1, cv2.LINE_AA)
    return frame


def write_synthetic(root: Path, n_train: int = 24, n_val: int = 8, size: int = SIZE, seed: int = 0) -> Path:
    """A dataset folder in the documented format from synthetic pairs (see the module docstring)."""
    import cv2

    from engine.joints import JOINTS, body_stats
    from engine.skeleton import draw
    rng = np.random.default_rng(seed)
    root = Path(root)
    n = n_train + n_val
    kps = np.stack([_pose(rng, size) for _ in range(n)]).astype(np.float32)
    split = np.array([0] * n_train + [1] * n_val, np.int8)
    index = np.array(list(range(n_train)) + list(range(n_val)), np.int32)
    for i in range(n):
        name = "train" if split[i] == 0 else "val"
        for kind, image in (("skeleton", draw(kps[i], size)), ("frame", _paint(kps[i], size, rng))):
            folder = root / name / kind
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{index[i]:06d}.png"), image[..., ::-1])
    np.savez(root / "keypoints.npz", keypoints=kps, split=split, index=index,
             time=np.arange(n, dtype=np.float64) / 10, source=np.zeros(n, np.int16), size=size, fps=10.0)
    info = {"format": 1, "counts": {"train": n_train, "val": n_val}, "fps": 10.0, "size": size,
            "joints": list(JOINTS), "sources": [], "drops": {}, "stats": body_stats(list(kps)),
            "pose_model": None, "seconds": 0.0}
    (root / "dataset.json").write_text(json.dumps(info, indent=1))
    return root


def tiny_dataset(tmp_path_factory, pose_model) -> Path:
    """The shared small dataset: real video through engine.dataset.build, else the synthetic one."""
    if "tiny" in _CACHE:
        return _CACHE["tiny"]
    root = tmp_path_factory.mktemp("dataset") / "tiny"
    if have_real_dataset_builder():
        from engine import dataset
        from tests.conftest import sample
        dataset.build([sample(VIDEO)], root, fps=10.0, size=SIZE, pose_model=pose_model, val_fraction=0.2, quiet=True)
    else:
        install_fallback()
        write_synthetic(root)
    _CACHE["tiny"] = root
    return root


if __name__ == "__main__":   # the CLI, with the fallback reader when engine.dataset is missing
    install_fallback()
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
