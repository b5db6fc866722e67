"""Test helper for training and evaluation: the small dataset folder, built once per test session.

    ds = tiny_dataset(tmp_path_factory, pose_model)

Real video through the real builder: `engine.data.dataset.build` on ../shared/data/video/dancer_room.mp4
(4 s, one dancer) at 10 fps and 64 px, with the lite MediaPipe model: person-centred crops, masks and
a plate; about 20 training and 6 validation pairs, in a few seconds. The folder is cached for the session (one build shared by
test_train, test_eval and any other module that asks).
"""

from __future__ import annotations

from pathlib import Path

SIZE = 64
VIDEO = "video/dancer_room.mp4"
_CACHE: dict[str, Path] = {}


def tiny_dataset(tmp_path_factory, pose_model) -> Path:
    """The shared small dataset folder (dataset.json, train/, val/, keypoints.npz)."""
    if "tiny" not in _CACHE:
        from engine.data import dataset
        from tests.conftest import sample
        root = tmp_path_factory.mktemp("dataset") / "tiny"
        dataset.build([sample(VIDEO)], root, fps=10.0, size=SIZE, pose_model=pose_model, val_fraction=0.2, quiet=True)
        _CACHE["tiny"] = root
    return _CACHE["tiny"]
