"""The demo's test: the unseen dance rendered through a served engine, and scored against its true renders.

    report, codec = evaluate_unseen(folder, settings, device="cpu", quiet=True, times={})
    # folder holds test_clip/, dataset/ and run/; writes generated/, side_by_side.mp4, losses.png

The unseen dance is filmed by the same camera as the training dance, in the dancer's own space: its
skeleton is sent in the video's pixels with normalization "none", placement "source" and alpha, as
the Blender add-on asks. Each frame comes back as the dancer with her matte, standing where her
skeleton is, and is composited over the run's stage plate (the room without her, from the training
video): the generated frames line up with the true renders pixel for pixel. Scores: SSIM, PSNR, L1
(whole frame and dancer's box), flicker (generated minus true renders, as eval's), pose error
(engine.model.metrics.pose_error, the measure `pix2dance eval` reports) and alpha IoU against
Blender's exact alpha of the unseen dance.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engine.errors import UserError

log = logging.getLogger("pix2dance.demo")


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """(N, H, W, 3) RGB -> folder/000000.png ..."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {folder / f'{i:06d}.png'}")


def generate_via_engine(run_dir: Path, keypoints: np.ndarray, size: int, fps: float, device: str,
                        quiet: bool) -> np.ndarray:
    """RGBA frames (N, size, size, 4) of (N, J, 3) keypoints in the square video's pixels, placed where
    the poses are, through a served engine (straight alpha: the dancer's matte)."""
    import cv2
    from tqdm import tqdm

    from engine.demo.serving import engine_server
    from engine.wire import protocol
    from engine.wire.client import Client, ClientError
    with engine_server(run_dir, device) as address, Client(address, timeout=60.0) as client:
        model = client.info()["models"][0]["name"]
        frames = []
        try:
            # One request for the whole dance where it fits (the engine smooths the framing over a request),
            # one sequence: a temporal model carries its previous frame across requests, should there be several.
            for frame in tqdm(client.render(model, keypoints, source_size=(size, size), mode="none", fmt="png",
                                            placement="source", alpha=True, fps=fps, chunk=protocol.MAX_FRAMES,
                                            sequence=uuid.uuid4().hex),
                              total=len(keypoints), desc="render via engine", unit="frame", disable=quiet):
                bgra = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_UNCHANGED)
                if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
                    raise UserError(f"the engine sent frame {frame.id} without alpha")
                frames.append(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA))
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
    """SSIM, PSNR, L1 (whole frame, and inside the dancer's box) and flicker of generated vs true frames.

    flicker is eval's: the generated frames' mean frame-to-frame change minus the true renders' (0: as
    steady as the truth; > 0 jittery; < 0 smoother than life, e.g. a dancer frozen in place)."""
    from engine.model import metrics
    a, b = metrics.to_unit(generated), metrics.to_unit(truth)
    mask = metrics.box_masks(keypoints, generated.shape[1])
    moved, moved_true = metrics.flicker(a), metrics.flicker(b)
    return {**metrics.image_scores(a, b), "body": metrics.image_scores(a, b, mask),
            "flicker": moved - moved_true, "flicker_generated": moved, "flicker_true": moved_true}


def score(generated: np.ndarray, truth: np.ndarray, keypoints: np.ndarray, pose_model: Path | None,
          fps: float, fallback_height: float | None, quiet: bool = True) -> dict:
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
    unseen dance through the client, composite it over the stage plate, score it; writes generated/
    (the composites), side_by_side.mp4, losses.png.

    s: the demo's pipeline.DemoSettings. Returns the report (eval.json's content, less `seconds`)
    and the video codec used.
    """
    from engine.data import skeleton, video
    from engine.data.pairs import read_rgb
    from engine.demo import synth
    from engine.model import compose, metrics, runs
    from engine.wire.joints import body_stats
    t0 = time.perf_counter()
    test_clip = synth.load_clip(folder / "test_clip")
    kp, size = test_clip.keypoints, test_clip.size
    rgba = generate_via_engine(folder / "run", kp, size, test_clip.fps, device, quiet)
    times["render"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    plate_path = folder / "run" / runs.STAGE_PLATE
    plate = read_rgb(plate_path) if plate_path.is_file() else None
    generated = np.stack([compose.over(layer, plate) for layer in rgba])
    write_frames(folder / "generated", generated)
    truth = synth.read_frames(test_clip)
    pose_model = resolve_pose_model(quiet)
    stats = body_stats(list(kp))
    report = score(generated, truth, kp, pose_model, s.fps, stats["height"] if stats else None, quiet)
    report["alpha_iou"] = metrics.alpha_iou(rgba[..., 3] / 255.0, synth.read_masks(test_clip) / 255.0)
    report.update(pose_model=pose_model.name if pose_model else None, frames=int(len(generated)),
                  unseen_choreography=True, placement="source", normalization="none (same camera)",
                  background="the run's stage plate" if plate is not None else "black (no plate)",
                  settings=asdict(s), device=device)
    skeletons = skeleton.draw_batch(kp, size)
    codec = video.write_video(folder / "side_by_side.mp4", side_by_side(skeletons, truth, generated, s.panel), s.fps)
    shutil.copyfile(folder / "run" / runs.PLOT, folder / "losses.png")
    times["evaluate"] = round(time.perf_counter() - t0, 1)
    return report, codec
