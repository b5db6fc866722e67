"""2D poses from images with MediaPipe's PoseLandmarker (Tasks API), as canonical keypoints.

    model = resolve_model(args.pose_model)          # --pose-model > $PIX2DANCE_POSE_MODEL > cache > download
    with PoseEstimator(model, num_poses=2) as est:  # VIDEO mode: one estimator per clip
        for t, rgb in video.sample(path, fps=10):
            people = est.detect(rgb, t * 1000)      # list of (J, 3) float32 keypoints in image pixels
    with PoseEstimator(model, masks=True) as est:   # each person's segmentation mask too
        for person in est.people(rgb, t * 1000):    # Person(keypoints (J, 3), mask (H, W) uint8 0-255)

The estimator is always closed (an unclosed landmarker prints a traceback at interpreter exit), and
its timestamps are forced to be strictly increasing integers, as VIDEO mode requires. MediaPipe's
C++ chatter (TFLite/LiteRT, glog) is held by engine.quiet so the CLI's output stays readable.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Before mediapipe is imported: its glog and TFLite logs otherwise fill the terminal.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from engine.atomic import atomic_file  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.quiet import quiet_fds  # noqa: E402
from engine.wire.joints import CORE, FROM_MEDIAPIPE, INDEX, NUM_JOINTS  # noqa: E402

log = logging.getLogger(__name__)

MODEL_URL = ("https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
             "pose_landmarker_full/float16/latest/pose_landmarker_full.task")
MODEL_ENV = "PIX2DANCE_POSE_MODEL"
CACHE_NAMES = ("pose_landmarker_full.task", "pose_landmarker_lite.task")
_CORE = np.array([INDEX[n] for n in CORE])

# FROM_MEDIAPIPE as arrays: (J, 33) averaging weights, and (J, K) landmark indices padded by
# repeating the first (repeats leave a minimum unchanged).
_WEIGHTS = np.zeros((NUM_JOINTS, 33), np.float32)
for _j, _group in enumerate(FROM_MEDIAPIPE):
    _WEIGHTS[_j, list(_group)] = 1.0 / len(_group)
_K = max(len(g) for g in FROM_MEDIAPIPE)
_GROUPS = np.array([list(g) + [g[0]] * (_K - len(g)) for g in FROM_MEDIAPIPE])


def cache_dir() -> Path:
    """Where downloaded models live: $XDG_CACHE_HOME/pix2dance, by default ~/.cache/pix2dance."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pix2dance"


def _existing_model(path: Path, where: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"pose model not found: {path} (from {where})")
    return path


def download(url: str, dest: Path, timeout: float = 20.0) -> Path:
    """Fetch `url` into `dest` atomically; a clear UserError when offline or refused."""
    log.info("downloading the pose model from %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_file(dest) as tmp:
            with open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot download the pose model ({reason}); are you offline? "
                        f"Pass --pose-model FILE or set {MODEL_ENV}") from None
    return dest


def resolve_model(path: str | os.PathLike | None = None, *, url: str = MODEL_URL, timeout: float = 20.0) -> Path:
    """The pose model to use: `path` > $PIX2DANCE_POSE_MODEL > the user cache > a download into it."""
    if path:
        return _existing_model(Path(path), "--pose-model")
    if os.environ.get(MODEL_ENV):
        return _existing_model(Path(os.environ[MODEL_ENV]), MODEL_ENV)
    cache = cache_dir()
    for name in CACHE_NAMES:
        if (cache / name).is_file():
            return cache / name
    return download(url, cache / CACHE_NAMES[0], timeout=timeout)


def from_mediapipe(landmarks, width: int, height: int) -> np.ndarray:
    """MediaPipe's 33 normalized landmarks -> canonical (J, 3) float32 keypoints in image pixels.

    landmarks: a sequence of objects with .x .y .visibility (Tasks API), or a (33, >=3) array of
    (x, y, visibility). Each joint is the mean of its landmarks in joints.FROM_MEDIAPIPE, and its
    visibility the least of theirs (a neck is seen only if both shoulders are).
    """
    if isinstance(landmarks, np.ndarray):
        lm = np.asarray(landmarks, np.float32)[:, :3]
    else:
        lm = np.array([(p.x, p.y, p.visibility if p.visibility is not None else 0.0) for p in landmarks], np.float32)
    if lm.shape[0] != 33:
        raise ValueError(f"expected 33 MediaPipe landmarks, got {lm.shape[0]}")
    kp = np.empty((NUM_JOINTS, 3), np.float32)
    kp[:, :2] = _WEIGHTS @ lm[:, :2]
    kp[:, 2] = lm[_GROUPS, 2].min(axis=1)
    kp[:, 0] *= width
    kp[:, 1] *= height
    return kp


def core_visibility(kp: np.ndarray) -> float:
    """Mean visibility of the core joints (limbs), a person-level confidence for (J, 3) keypoints."""
    return float(np.mean(kp[_CORE, 2]))


@dataclass
class Person:
    """One person found in an image: (J, 3) float32 keypoints in its pixels, and (H, W) uint8 mask or None."""
    keypoints: np.ndarray
    mask: np.ndarray | None = None


class PoseEstimator:
    """MediaPipe PoseLandmarker in VIDEO mode as a context manager; one per clip (it tracks).

    detect(rgb, t_ms) returns every person found as (J, 3) float32 keypoints in pixels of `rgb`,
    the most confident first (by core_visibility); people(rgb, t_ms) the same as Person records,
    each with its segmentation mask (0-255, the image's size) when made with masks=True.
    """

    def __init__(self, model: str | os.PathLike, num_poses: int = 2, min_confidence: float = 0.5,
                 masks: bool = False):
        self.model = Path(model)
        self.num_poses = num_poses
        self.min_confidence = min_confidence
        self.masks = masks
        self._landmarker = None
        self._last_ms = -1

    def open(self) -> "PoseEstimator":
        if self._landmarker is not None:
            return self
        model = _existing_model(self.model, "the pose model path")
        with quiet_fds(what="MediaPipe"):
            from mediapipe.tasks.python.core.base_options import BaseOptions
            from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode
            options = PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(model)),
                running_mode=RunningMode.VIDEO,
                num_poses=self.num_poses,
                min_pose_detection_confidence=self.min_confidence,
                min_pose_presence_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
                output_segmentation_masks=self.masks)
            try:
                self._landmarker = PoseLandmarker.create_from_options(options)
            except (RuntimeError, ValueError) as e:
                raise UserError(f"not a MediaPipe pose landmarker model: {model} ({str(e).splitlines()[0]})") from None
        self._last_ms = -1
        return self

    def close(self) -> None:
        if self._landmarker is not None:
            with quiet_fds(what="MediaPipe"):
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "PoseEstimator":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a forgotten close() must not leave a landmarker to crash at exit
        try:
            self.close()
        except Exception:
            pass

    def timestamp(self, t_ms: float) -> int:
        """The integer ms stamp for this call: t_ms rounded, pushed past the last one if needed."""
        ms = int(round(t_ms))
        if ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms

    def detect(self, rgb: np.ndarray, t_ms: float) -> list[np.ndarray]:
        """People in an RGB uint8 (H, W, 3) image at time t_ms: a list of (J, 3) float32 keypoints."""
        return [p.keypoints for p in self.people(rgb, t_ms)]

    def people(self, rgb: np.ndarray, t_ms: float) -> list[Person]:
        """People in an RGB uint8 (H, W, 3) image at time t_ms, most confident first, masks with their poses."""
        if self._landmarker is None:
            raise RuntimeError("PoseEstimator used outside its `with` block")
        import mediapipe as mp
        rgb = np.ascontiguousarray(rgb)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        ms = self.timestamp(t_ms)
        with quiet_fds(what="MediaPipe"):  # C++ warnings (tensor alignment, ROI) come on first use of each path
            result = self._landmarker.detect_for_video(image, ms)
        height, width = rgb.shape[:2]
        masks = list(result.segmentation_masks or []) if self.masks else []
        people = []
        for i, lms in enumerate(result.pose_landmarks):
            # The i-th mask belongs to the i-th pose; converted before sorting so each stays with its person.
            mask = None
            if i < len(masks):
                view = masks[i].numpy_view().reshape(height, width)
                mask = (view * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            people.append(Person(from_mediapipe(lms, width, height), mask))
        people.sort(key=lambda p: core_visibility(p.keypoints), reverse=True)
        return people
