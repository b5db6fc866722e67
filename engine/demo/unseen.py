"""The demo's test: the unseen dance rendered through a served engine, and scored against its true renders.

    report, codec = evaluate_unseen(folder, settings, device="cpu", quiet=True, times={})
    # folder holds test_clip/, dataset/ and run/; writes generated/, side_by_side.mp4, losses.png

The unseen dance is filmed by the same camera as the training dance, so its true renders are cut
with the training set's crop and its skeleton is sent in that crop's pixels with normalization
"none": the generated frames then line up with the true renders pixel for pixel, and SSIM/PSNR
measure the generator alone. Pose error is engine.model.metrics.pose_error, the measure
`pix2dance eval` reports, with the same fallback body height (the dataset's).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engine.errors import UserError

log = logging.getLogger("pix2dance.demo")


def crop_frames(frames: np.ndarray, crop: dict, size: int) -> np.ndarray:
    """Cut the dataset's square crop {x, y, side} out of (N, H, W, 3) frames, as the dataset did."""
    from engine.data import dataset
    box = dataset.Crop(int(crop["x"]), int(crop["y"]), int(crop["side"]))
    return np.stack([dataset.crop_image(f, box, size) for f in frames])


def to_crop(keypoints: np.ndarray, crop: dict) -> np.ndarray:
    """(N, J, 3) keypoints in video pixels -> pixels of the crop square (side x side)."""
    from engine.data import dataset
    side = int(crop["side"])
    return dataset.Crop(int(crop["x"]), int(crop["y"]), side).to_crop_pixels(keypoints, side)


def unseen_truth(clip, crop: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The unseen dance's true renders cut like the dataset, (N, S, S, 3), and its skeleton in model pixels."""
    from engine.demo import synth
    truth = crop_frames(synth.read_frames(clip), crop, size)
    kp = to_crop(clip.keypoints, crop)
    kp[..., :2] *= size / crop["side"]
    return truth, kp


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """(N, H, W, 3) RGB -> folder/000000.png ..."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {folder / f'{i:06d}.png'}")


def generate_via_engine(run_dir: Path, keypoints: np.ndarray, side: int, device: str, quiet: bool) -> np.ndarray:
    """Frames for (N, J, 3) keypoints in crop pixels, through a served engine: (N, S, S, 3) uint8."""
    import cv2
    from tqdm import tqdm

    from engine.demo.serving import engine_server
    from engine.wire.client import Client, ClientError
    with engine_server(run_dir, device) as address, Client(address, timeout=60.0) as client:
        model = client.info()["models"][0]["name"]
        frames = []
        try:
            for frame in tqdm(client.render(model, keypoints, source_size=(side, side), mode="none", fmt="png"),
                              total=len(keypoints), desc="render via engine", unit="frame", disable=quiet):
                bgr = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        except ClientError as e:
            raise UserError(f"the engine failed to render the unseen dance: {e}") from None
    return np.stack(frames)


def resolve_pose_model(quiet: bool) -> Path | None:
    """The MediaPipe model when one resolves (env, cache, or a download); None offline."""
    from engine.data import pose
    try:
        return pose.resolve_model(None, timeout=10.0)
    except Exception as e:   # UserError, and the many errors of network stacks: the demo goes on without
        log.warning("no pose model (%s): pose error will be null", e)
        return None


def image_scores(generated: np.ndarray, truth: np.ndarray, keypoints: np.ndarray) -> dict:
    """SSIM, PSNR, L1 (whole frame, and inside the dancer's box) and flicker of generated vs true frames."""
    from engine.model import metrics
    a, b = metrics.to_unit(generated), metrics.to_unit(truth)
    mask = metrics.box_masks(keypoints, generated.shape[1])
    return {**metrics.image_scores(a, b), "body": metrics.image_scores(a, b, mask),
            "flicker": metrics.flicker(a), "flicker_true": metrics.flicker(b)}


def score(generated: np.ndarray, truth: np.ndarray, keypoints: np.ndarray, pose_model: Path | None,
          fps: float, fallback_height: float, quiet: bool = True) -> dict:
    """The demo's scores of generated vs true frames (N, S, S, 3) of poses (N, J, 3) in their pixels.

    Image scores, and pose error of the generated frames and of the true ones (the detector's own
    floor) by metrics.pose_error; the pose numbers are None without a pose model.
    """
    from engine.model import metrics
    report = image_scores(generated, truth, keypoints)
    report.update(pose_error=None, detection_rate=None, pose_error_true_render=None, detection_rate_true_render=None)
    if pose_model is not None:
        report["pose_error"], report["detection_rate"] = metrics.pose_error(
            generated, keypoints, pose_model, fps, fallback_height, quiet, "pose error (generated)")
        report["pose_error_true_render"], report["detection_rate_true_render"] = metrics.pose_error(
            truth, keypoints, pose_model, fps, fallback_height, quiet, "pose error (true renders)")
    return report


def side_by_side(skeletons: np.ndarray, truth: np.ndarray, generated: np.ndarray, panel: int) -> np.ndarray:
    """(N, S, S, 3) x 3 -> (N, panel, 3 * panel, 3): skeleton | true render | generated, labelled."""
    import cv2
    out = []
    for row in zip(skeletons, truth, generated):
        tiles = [cv2.resize(t, (panel, panel), interpolation=cv2.INTER_NEAREST if panel % t.shape[0] == 0 else cv2.INTER_LINEAR)
                 for t in row]
        for tile, label in zip(tiles, ("skeleton", "true render", "generated")):
            cv2.putText(tile, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(np.hstack(tiles))
    return np.stack(out)


def evaluate_unseen(folder: Path, s, device: str, quiet: bool, times: dict) -> tuple[dict, str]:
    """Steps 4-5 in a demo folder holding test_clip/, dataset/ and run/: serve the run, render the
    unseen dance through the client, score it; writes generated/, side_by_side.mp4, losses.png.

    s: the demo's pipeline.DemoSettings. Returns the report (eval.json's content, less `seconds`)
    and the video codec used.
    """
    from engine.data import skeleton, video
    from engine.demo import synth
    from engine.model import batches, runs
    from engine.model.evaluate import body_height_of
    t0 = time.perf_counter()
    test_clip = synth.load_clip(folder / "test_clip")
    info = batches.dataset_info(folder / "dataset")
    crop = info["sources"][0]["crop"]
    test_kp = to_crop(test_clip.keypoints, crop)                                  # (N, J, 3) crop px
    generated = generate_via_engine(folder / "run", test_kp, int(crop["side"]), device, quiet)
    times["render"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    write_frames(folder / "generated", generated)
    truth, kp_model = unseen_truth(test_clip, crop, s.size)
    skeletons = skeleton.draw_batch(kp_model, s.size)
    pose_model = resolve_pose_model(quiet)
    report = score(generated, truth, kp_model, pose_model, s.fps, body_height_of(info, s.size), quiet)
    report.update(pose_model=pose_model.name if pose_model else None, frames=int(len(generated)),
                  unseen_choreography=True, normalization="none (same camera, dataset crop)",
                  settings=asdict(s), device=device)
    codec = video.write_video(folder / "side_by_side.mp4", side_by_side(skeletons, truth, generated, s.panel), s.fps)
    shutil.copyfile(folder / "run" / runs.PLOT, folder / "losses.png")
    times["evaluate"] = round(time.perf_counter() - t0, 1)
    return report, codec
