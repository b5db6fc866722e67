"""The `pix2dance` command: argparse subcommands, and the only reader of argv.

Each subcommand parses its options here and calls one function of the module that does the work,
with explicit arguments. Heavy modules are imported inside the handlers, so `pix2dance --help`
and argument errors are instant. A `UserError` anywhere ends the command with one line on stderr
and exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import UserError

log = logging.getLogger("pix2dance")


def _frames_range(text: str) -> tuple[int, int]:
    """'A:B' -> (A, B), an inclusive frame range."""
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (two frame numbers), got {text!r}") from None
    if b < a:
        raise argparse.ArgumentTypeError(f"frame range {text!r} ends before it starts")
    return a, b


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run the generator (auto: cuda when available)")


def _backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                   help="what runs the generator (auto: torch on a CUDA GPU, OpenVINO on a CPU; "
                        "openvino runs on the CPU only)")


# --- handlers: one per subcommand --------------------------------------------------------------

def cmd_dataset(a: argparse.Namespace) -> None:
    from engine.data import dataset
    dataset.build(a.videos, a.out, fps=a.fps, size=a.size, pose_model=a.pose_model,
                  val_fraction=a.val_fraction, quiet=a.quiet, force=a.force)


def cmd_train(a: argparse.Namespace) -> None:
    import dataclasses

    from engine.model import train
    # Options left out keep the run's settings when resuming, else TrainConfig's defaults.
    given = {"size": a.size, "ngf": a.ngf, "ndf": a.ndf, "batch": a.batch, "gan": a.gan, "lr": a.lr,
             "jitter": a.jitter, "scales": a.scales, "feat_weight": a.feat_weight, "limb_dropout": a.limb_dropout,
             "temporal": a.temporal}
    base = train.saved_config(a.out) or train.TrainConfig()
    cfg = dataclasses.replace(base, steps=a.steps, seed=a.seed, **{k: v for k, v in given.items() if v is not None})
    train.run(cfg, a.dataset, a.out, device=a.device, amp=a.amp, compile=a.compile,
              checkpoint_every=a.checkpoint_every, val_every=a.val_every, quiet=a.quiet)


def cmd_eval(a: argparse.Namespace) -> None:
    from engine.model import evaluate
    evaluate.run(a.run, a.data, a.out, split=a.split, device=a.device, pose_model=a.pose_model, quiet=a.quiet)


def cmd_serve(a: argparse.Namespace) -> None:
    from engine.serve import server
    server.main(a.runs, bind=a.bind, device=a.device, backend=a.backend, curve_secret=a.curve_secret,
                curve_clients=a.curve_clients, quiet=a.quiet, max_batch=a.max_batch)


def cmd_keys(a: argparse.Namespace) -> None:
    from engine.serve import keys
    keys.make_keys(a.out)


def cmd_render(a: argparse.Namespace) -> None:
    from engine import render
    render.run(a.run, a.motion, a.out, fps=a.fps, frames=a.frames, armature=a.armature, camera=a.camera,
               mapping=a.mapping, engine=a.engine, side_by_side=a.side_by_side, png=a.png,
               device=a.device, backend=a.backend, pose_model=a.pose_model, verbose=a.verbose, quiet=a.quiet,
               engine_timeout=a.timeout, placement=a.placement, background=a.background, report=a.report)


def cmd_map(a: argparse.Namespace) -> None:
    from engine.motion import rig_map
    rig_map.map_rig(a.rig, out=a.out, armature=a.armature, verbose=a.verbose)


def cmd_demo(a: argparse.Namespace) -> None:
    from engine.demo import pipeline as demo
    demo.run(a.out, quick=a.quick, device=a.device, quiet=a.quiet)


def cmd_addon(a: argparse.Namespace) -> None:
    from engine import addon_build
    addon_build.build(a.out)


# --- the parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pix2dance",
        description="See new choreography danced by a real dancer: build a training set from a dance "
                    "video, train a pix2pix generator, and render skeletons from Blender, BVH or video.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    common.add_argument("--verbose", action="store_true", help="debug logging (and bpy's own output)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, help: sub.add_parser(name, help=help, description=help, parents=[common])  # noqa: E731

    p = add("dataset", "build a training set (skeleton, frame pairs) from dance videos")
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="videos of one dancer")
    p.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    p.add_argument("--fps", type=float, default=10.0, help="frames sampled per second of video (default 10)")
    p.add_argument("--size", type=int, default=256, help="square image size in pixels (default 256)")
    p.add_argument("--pose-model", type=Path, help="MediaPipe pose landmarker .task file (default: "
                   "$PIX2DANCE_POSE_MODEL, else ~/.cache/pix2dance/, else downloaded there)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="last part of each clip kept for validation (default 0.1; 0 for none)")
    p.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=cmd_dataset)

    p = add("train", "train (or resume) the pix2pix generator on a dataset")
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    p.add_argument("--out", required=True, type=Path, help="run folder (rerunning resumes)")
    p.add_argument("--steps", type=int, default=20000, help="total steps of the run (default 20000); "
                   "rerunning resumes from the last checkpoint, and a finished run only validates")
    p.add_argument("--size", type=int, help="image size, a power of two (default: the dataset's)")
    p.add_argument("--ngf", type=int, help="generator width (default 64, or the run's when resuming)")
    p.add_argument("--ndf", type=int, help="discriminator width (default: ngf)")
    p.add_argument("--batch", type=int, help="batch size per process (default 1, or the run's when resuming)")
    p.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=None,
                   help="the temporal model: G also sees its previous frame, trained on consecutive pairs with a "
                        "temporal discriminator, rendered in order (default on; --no-temporal: one frame at a time)")
    p.add_argument("--gan", choices=["lsgan", "vanilla"], help="adversarial loss (default lsgan, as pix2pixHD)")
    p.add_argument("--scales", type=int, help="discriminator scales (default 2, as pix2pixHD; 1: the pix2pix PatchGAN)")
    p.add_argument("--feat-weight", type=float, help="weight of the discriminator feature-matching loss (default 10; 0: off)")
    p.add_argument("--limb-dropout", type=float, help="chance a training skeleton loses a limb (default 0.1)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4; linear decay over the second half)")
    p.add_argument("--jitter", type=float, help="largest zoom of the scale-and-crop augmentation (default 1.12; 1: none)")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="K",
                   help="checkpoint every K steps and at the end (a kill loses at most K steps; default 500)")
    p.add_argument("--val-every", type=int, default=1000, metavar="V",
                   help="validate (metrics.jsonl, sample grid, losses.png) every V steps and at the end (default 1000)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision on GPU (auto: bf16 where supported, else fp16; always off on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (GPU; slow to start)")
    p.add_argument("--seed", type=int, help="seed; also turns on deterministic kernels (default: random, recorded)")
    _device_arg(p)
    p.set_defaults(func=cmd_train)

    p = add("eval", "measure a run on a dataset split: SSIM, PSNR, L1, pose error, flicker")
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--data", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--out", required=True, type=Path, help="report folder to write")
    p.add_argument("--pose-model", type=Path, help="MediaPipe pose landmarker .task file")
    _device_arg(p)
    p.set_defaults(func=cmd_eval)

    p = add("serve", "serve trained dancers over ZeroMQ")
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="runs to serve (default: the demo model)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ address (default loopback)")
    p.add_argument("--curve-secret", type=Path, help="server secret key file: KEYS/server.key_secret from "
                   "`pix2dance keys --out KEYS` (required, with --curve-clients, for a non-loopback --bind)")
    p.add_argument("--curve-clients", type=Path, help="folder of allowed client public keys: KEYS/clients")
    p.add_argument("--max-batch", type=int, help="frames per generator call (default: 16 on cuda, 4 on cpu)")
    _device_arg(p)
    _backend_arg(p)
    p.set_defaults(func=cmd_serve)

    p = add("keys", "make CURVE key pairs for a server and a client")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help=(
        "writes DIR/server.key and DIR/server.key_secret (the server's pair), DIR/client.key and "
        "DIR/client.key_secret (a client's pair) and DIR/clients/client.key (the allow-list). Serve with "
        "--curve-secret DIR/server.key_secret --curve-clients DIR/clients; a client connects with "
        "Client(address, curve=(DIR/server.key, DIR/client.key_secret)). Allow more clients by copying "
        "their public .key files into DIR/clients (read when serve starts). Existing keys are never overwritten."))
    p.set_defaults(func=cmd_keys)

    p = add("render", "render a motion (.blend, .bvh, .npz, video) as the trained dancer")
    p.epilog = ("examples: pix2dance render runs/anna --motion dance.bvh --out dance.mp4 --fps 30 --side-by-side | "
                "pix2dance render runs/anna --motion other_dancer.mp4 --out frames/ --frames 1:120")
    p.add_argument("run", type=Path, metavar="RUN_DIR",
                   help="trained run folder (with --engine: the model name the engine serves it under)")
    p.add_argument("--motion", required=True, type=Path,
                   help=".blend (scene camera, armature, scene frame range), .bvh (auto-mapped, automatic "
                        "front camera), .npz (a dataset's keypoints.npz), or a video .mp4/.mov (motion transfer: "
                        "MediaPipe poses, smoothed)")
    p.add_argument("--out", required=True, type=Path,
                   help="OUT.mp4 (H.264: plays in browsers and phones), OUT.mov (ProRes 4444, with alpha where "
                        "the frames have it) or .m4v/.avi for a video; any other name is a folder of PNG frames "
                        "numbered like --frames (000001.png ...)")
    p.add_argument("--fps", type=float, help="output frame rate; the source is resampled to it (default: the source's)")
    p.add_argument("--frames", type=_frames_range, metavar="A:B",
                   help="inclusive range of the source's frames after resampling, numbered from 1 like Blender "
                        "frames (frame 1 = the source's first; --fps 10 --frames 1:40 renders exactly 40 frames)")
    p.add_argument("--armature", help="armature object name in a .blend (default: the add-on's, else the first)")
    p.add_argument("--camera", help="camera object name in a .blend (default: the scene camera)")
    p.add_argument("--mapping", type=Path,
                   help="bone-mapping JSON (the add-on's format) for a .blend or .bvh "
                        "(default: the mapping saved in the .blend, else auto-detected)")
    p.add_argument("--engine", metavar="ADDRESS",
                   help="render through a running `pix2dance serve` at this address (e.g. tcp://127.0.0.1:5555)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a silent engine is waited for before giving up (--engine; default 10)")
    p.add_argument("--side-by-side", action="store_true",
                   help="the source beside the dancer: the source video frame, or the skeleton the dancer was given")
    p.add_argument("--png", action="store_true", help="with a video OUT, also write PNG frames to OUT_frames/ "
                   "(RGBA: the dancer with her matte as straight alpha)")
    p.add_argument("--placement", choices=["crop", "dancer", "source"],
                   help="where the dancer goes: dancer (default for video, .bvh, .npz: normalized into her own video "
                        "frame, over her plate), source (default for .blend: where the pose is in the source image, "
                        "at its size, with alpha), crop (the bare person-centred square)")
    p.add_argument("--background", default="plate", metavar="plate|none|FILE",
                   help="behind the dancer in the video: plate (her room without her; default), none (transparent "
                        "in .mov and PNG, black in .mp4), or an image or video FILE scaled to the frame (a video "
                        "holds its last frame when it runs out)")
    p.add_argument("--report", type=Path, metavar="FILE.json",
                   help="write one row per rendered frame: frame, source_frame, novelty, placement (crop -> frame)")
    p.add_argument("--pose-model", type=Path, help="MediaPipe pose landmarker .task file (video sources)")
    _device_arg(p)
    _backend_arg(p)
    p.set_defaults(func=cmd_render)

    p = add("map", "auto-map a rig's bones to the skeleton's joints, showing how each joint was found")
    p.epilog = "example: pix2dance map hero.glb --out hero_mapping.json (then: render --motion scene.blend --mapping hero_mapping.json)"
    p.add_argument("rig", type=Path, help="the rig: .blend, .glb/.gltf, .fbx or .bvh")
    p.add_argument("--out", type=Path, help="write the mapping JSON (what render --mapping takes, plus each joint's how)")
    p.add_argument("--armature", help="the armature to map, by object name (default: the first)")
    p.set_defaults(func=cmd_map)

    p = add("demo", "the whole product end to end on a synthetic dancer (10 to 15 minutes on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="folder to write, replaced when the demo finishes (default: demo-output)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a minute or two, blurry (what the tests run)")
    _device_arg(p)
    p.set_defaults(func=cmd_demo)

    p = add("addon", "build the Blender extension .zip (pyzmq wheels bundled)")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_addon)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    try:
        args.func(args)
    except UserError as e:
        print(f"pix2dance {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pix2dance {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
