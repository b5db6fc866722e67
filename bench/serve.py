"""Benchmark: the CPU backends side by side, and what the engine server costs over the Predictor in-process.

    .venv/bin/python bench/serve.py [--run RUN_DIR] [--quick] [--frames 64] [--batch 8] [--repeat 3]

Same model, same frames, measured one after the other in this one run (interleaved, best of a few:
load from elsewhere on the machine hits every side alike):
0. backends, the generator alone (skeletons drawn beforehand) on the CPU: torch fp32 at batch 1
   (the reference), OpenVINO at batch 1 (LATENCY: both cores on one frame) and OpenVINO batched
   (THROUGHPUT streams, async infer requests: a frame per core). Targets: >= 1.8x and >= 2.2x.
   Also the largest difference between torch's and OpenVINO's frames (in 1/255 levels).
1. throughput: frames/s through client -> server -> client (raw RGB and PNG) against
   Predictor.predict in-process, both on the default backend (auto) at the same batch size.
   Target: ratio >= 0.9 at 256 px on CPU.
2. live preview: one frame's round trip minus the predictor's own time for that request (the
   server reports it in the reply as predict_s). Target: <= 5 ms on loopback.
3. on a GPU (when torch sees one): Predictor frames/s batched with mixed precision and
   channels_last against batch 1 fp32 eager (target >= 5x), the generator alone at a large batch
   (raw frames, no encoding; target >= 10,000 frames/s on a data-centre GPU) and the served figure.
4. a temporal run (each frame conditioned on the one before, generated in lanes): served frames/s
   of one sequence sent as one request (the engine splits it into the same lanes) against
   Predictor.render in-process (target: ratio >= 0.9), the same sent in 8-frame chunks of one
   sequence (each continues the last: coherent, but one lane), and the live preview stepping
   forward one frame at a time (each warm): round trip minus predict_s (target <= 5 ms).
Without --run it makes an untrained 256 px ngf 64 generator (speed does not depend on training),
and for section 4 an untrained temporal one (tests.conftest.make_tiny_run).
The load average is printed before and after: figures from a busy machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.wire import protocol  # noqa: E402
from engine.wire.client import Client  # noqa: E402
from engine.wire.joints import INDEX, JOINTS, NUM_JOINTS, body_stats  # noqa: E402
from engine.model.predictor import Predictor  # noqa: E402
from tests.conftest import make_tiny_run  # noqa: E402
from tests.conftest import standing_pose as standing  # noqa: E402  (one known pose for tests and benches)


def motion(n: int) -> np.ndarray:
    """n poses in a 1280 x 720 source: stepping sideways, an arm sweeping up."""
    kp = np.repeat((standing() * [2.0, 2.0, 1.0] + [400, 150, 0]).astype(np.float32)[None], n, axis=0)
    t = np.linspace(0, 1, n)
    kp[:, :, 0] += (300 * t)[:, None]
    kp[:, INDEX["right_wrist"], 1] -= 150 * t
    kp[:, INDEX["right_elbow"], 1] -= 70 * t
    return kp


def untrained_run(folder: Path, size: int, ngf: int) -> Path:
    from engine.model.networks import Generator
    from engine.model.runs import save_generator
    torch.manual_seed(0)
    config = {"size": size, "ngf": ngf, "joints": list(JOINTS), "stats": body_stats([standing(256)]),
              "stats_size": 256, "name": f"untrained-{size}px-ngf{ngf}"}
    save_generator(folder, Generator(size=size, ngf=ngf), config)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(run: Path, device: str, max_batch: int, log) -> tuple[subprocess.Popen, str]:
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", str(run), "--bind", address,
                             "--device", device, "--max-batch", str(max_batch)], cwd=ROOT, stdout=log, stderr=log)
    with Client(address, timeout=120) as c:
        c.ping()
    return proc, address


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` wall-clock seconds (best: the least disturbed by the other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def preview_overhead(address: str, model: str, pose: np.ndarray, fmt: str, reps: int,
                     sequence: str | None = None) -> tuple[float, float]:
    """Median (round trip, round trip - server predict_s) of single-frame renders on a plain DEALER.

    sequence: each frame continues it one frame forward (a temporal model: every reply but the first warm)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    trips, overheads = [], []
    try:
        for i in range(reps + 1):
            ref = protocol.SequenceRef(sequence, i) if sequence else None
            msg = protocol.RenderRequest(f"p{i}", model, [i], list(JOINTS), pose.astype("<f4").tobytes(),
                                         source_size=(1280, 720), mode="frame", format=fmt, sequence=ref).encode()
            start = time.perf_counter()
            s.send_multipart(msg)
            if not s.poll(120_000):
                raise RuntimeError("no reply from the engine")
            reply = s.recv_multipart()
            trip = time.perf_counter() - start
            head = json.loads(reply[0])
            if head["kind"] != "render" or (sequence and i and not head["warm"]):
                raise RuntimeError(f"preview frame {i}: {head}")
            if i:                                   # the first one warms up
                trips.append(trip)
                overheads.append(trip - head["predict_s"])
    finally:
        s.close()
    return statistics.median(trips), statistics.median(overheads)


def backends_side_by_side(run: Path, frames: int, batch: int, repeat: int) -> None:
    """Section 0: the generator alone on torch (batch 1), OpenVINO (batch 1) and OpenVINO (batched)."""
    sides = {"torch fp32, batch 1 (reference)": Predictor(run, "cpu", backend="torch", max_batch=1),
             "OpenVINO, batch 1": Predictor(run, "cpu", backend="openvino", max_batch=1),
             f"OpenVINO, batch {batch} (async)": Predictor(run, "cpu", backend="openvino", max_batch=batch)}
    first = next(iter(sides.values()))
    skeletons = first.skeletons(motion(frames), (1280, 720))
    outputs = {name: p.generate(skeletons[:batch]) for name, p in sides.items()}         # warm-ups
    seconds = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, p in sides.items():
            seconds[name] = min(seconds[name], timed(lambda p=p: p.generate(skeletons)))
    reference = seconds[next(iter(sides))]
    print(f"\n0. backends on the CPU, the generator alone, {frames} frames at {first.size} px")
    for (name, t), target in zip(seconds.items(), (None, 1.8, 2.2)):
        verdict = "" if target is None else (f"  speed-up {reference / t:.2f}x (target >= {target}x: "
                                             f"{'met' if reference / t >= target else 'NOT met'})")
        print(f"   {name:34s} {frames / t:7.2f} frames/s{verdict}")
    torch_frames = outputs[next(iter(sides))].astype(int)
    worst = max(int(np.abs(o.astype(int) - torch_frames).max()) for o in outputs.values())
    print(f"   largest difference from torch's frames: {worst} / 255 (the test's bound: 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a trained run (default: an untrained 256 px ngf 64 generator)")
    ap.add_argument("--quick", action="store_true", help="a few frames: seconds, for a smoke test")
    ap.add_argument("--frames", type=int, help="frames per throughput measurement (default 64, quick 8)")
    ap.add_argument("--batch", type=int, default=8, help="max batch, in-process and in the server (default 8)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for sections 1 and 2")
    ap.add_argument("--skip-backends", action="store_true", help="leave out section 0")
    ap.add_argument("--temporal-run", type=Path, help="a trained temporal run for section 4 (default: an untrained "
                    "256 px ngf 64 one)")
    ap.add_argument("--repeat", type=int, help="measurements per side, the best kept (default 3, quick 2; "
                    "more on a busy machine)")
    args = ap.parse_args()
    frames = args.frames or (8 if args.quick else 64)
    reps = 3 if args.quick else 20
    repeat = args.repeat or (2 if args.quick else 3)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or untrained_run(Path(tmp) / "run", 256, 64)
        log = open(Path(tmp) / "engine.log", "w+")
        if not args.skip_backends:
            backends_side_by_side(run, frames, args.batch, repeat)
        predictor = Predictor(run, args.device, max_batch=args.batch)
        print(f"\nmodel {predictor.name}: {predictor.size} px, ngf {predictor.config['ngf']}, {predictor.backend.name} "
              f"on {predictor.device}, batch {args.batch}, {torch.get_num_threads()} torch threads, {frames} frames")
        kp = motion(frames)
        proc, address = start_engine(run, args.device, args.batch, log)
        try:
            with Client(address, timeout=60) as c:
                predictor.predict(kp[:args.batch], (1280, 720))                   # warm-ups
                list(c.render(predictor.name, kp[:args.batch], source_size=(1280, 720), fmt="raw"))
                local, served = float("inf"), {"raw": float("inf"), "png": float("inf")}
                for _ in range(repeat):
                    local = min(local, timed(lambda: predictor.predict(kp, (1280, 720))))
                    for fmt in served:
                        served[fmt] = min(served[fmt], timed(lambda fmt=fmt: list(c.render(
                            predictor.name, kp, source_size=(1280, 720), fmt=fmt, chunk=args.batch, in_flight=2))))
                one = kp[:1]
                local_one = statistics.median(timed(lambda: predictor.predict(one, (1280, 720))) for _ in range(reps))
                client_one = statistics.median(timed(lambda: list(c.render(predictor.name, one, source_size=(1280, 720))))
                                               for _ in range(reps))
            trip_png, over_png = preview_overhead(address, predictor.name, kp[0], "png", reps)
            trip_raw, over_raw = preview_overhead(address, predictor.name, kp[0], "raw", reps)
        finally:
            proc.terminate()
            proc.wait(30)

        print("\n1. throughput, client -> server -> client vs Predictor in-process (same frames, same batch)")
        print(f"   in-process        {frames / local:8.2f} frames/s")
        for fmt, seconds in served.items():
            ratio = local / seconds
            print(f"   served ({fmt:3s})      {frames / seconds:8.2f} frames/s   ratio {ratio:.3f}  "
                  f"(target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
        print("\n2. live preview, one frame on loopback")
        print(f"   round trip (png)  {trip_png * 1e3:8.2f} ms, minus the server's predictor time: "
              f"{over_png * 1e3:.2f} ms (target <= 5 ms: {'met' if over_png <= 0.005 else 'NOT met'})")
        print(f"   round trip (raw)  {trip_raw * 1e3:8.2f} ms, minus the server's predictor time: {over_raw * 1e3:.2f} ms")
        print(f"   Client.render     {client_one * 1e3:8.2f} ms vs Predictor.predict in-process {local_one * 1e3:.2f} ms "
              f"(different processes: noisy at CPU speeds)")

        if torch.cuda.is_available():
            gpu(run, args.quick, log)
        else:
            print("\n3. GPU: torch sees no CUDA device here; skipped")
        temporal_section(args.temporal_run or make_tiny_run(Path(tmp) / "temporal", size=256, ngf=64, temporal=True),
                         args.device, args.batch, frames if not args.quick else 32, reps, repeat, log)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def temporal_section(run: Path, device: str, batch: int, frames: int, reps: int, repeat: int, log) -> None:
    """Section 4: a temporal run served (one request: lanes; 8-frame chunks: one lane) against in-process,
    and the live preview stepping forward warm."""
    predictor = Predictor(run, device, max_batch=batch)
    kp = motion(frames)
    lanes = predictor.sequence(predictor.frame(kp, (1280, 720)), 0, frames).lanes
    proc, address = start_engine(run, device, batch, log)
    try:
        with Client(address, timeout=120) as c:
            predictor.render(kp[:batch], (1280, 720))                              # warm-ups
            list(c.render(predictor.name, kp[:batch], source_size=(1280, 720), fmt="raw", chunk=batch))
            local = served = chunked = float("inf")
            for run_index in range(repeat):
                local = min(local, timed(lambda: predictor.render(kp, (1280, 720))))
                served = min(served, timed(lambda i=run_index: list(c.render(
                    predictor.name, kp, source_size=(1280, 720), fmt="raw", chunk=frames, sequence=f"one-{i}"))))
                chunked = min(chunked, timed(lambda i=run_index: list(c.render(
                    predictor.name, kp, source_size=(1280, 720), fmt="raw", chunk=8, in_flight=2,
                    sequence=f"chunks-{i}"))))
        trip, over = preview_overhead(address, predictor.name, kp[0], "png", reps, sequence="preview")
        trip_raw, over_raw = preview_overhead(address, predictor.name, kp[0], "raw", reps, sequence="preview-raw")
    finally:
        proc.terminate()
        proc.wait(30)
    ratio = local / served
    print(f"\n4. temporal run {predictor.name}: {predictor.size} px, in_channels {predictor.in_channels}, "
          f"{predictor.backend.name} on {predictor.device}, batch {batch}, {frames} frames in {lanes} lanes")
    print(f"   in-process (Predictor.render)       {frames / local:8.2f} frames/s")
    print(f"   served, one request (raw)           {frames / served:8.2f} frames/s   ratio {ratio:.3f}  "
          f"(target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    print(f"   served, 8-frame chunks of one sequence {frames / chunked:5.2f} frames/s   (each chunk continues the "
          f"last: one lane, batch 1)")
    print(f"   live preview stepping forward (warm): round trip (png) {trip * 1e3:.2f} ms, minus predict_s "
          f"{over * 1e3:.2f} ms (target <= 5 ms: {'met' if over <= 0.005 else 'NOT met'}); raw {trip_raw * 1e3:.2f} ms, "
          f"minus predict_s {over_raw * 1e3:.2f} ms")


def gpu(run: Path, quick: bool, log, device: str = "cuda") -> None:
    """Section 3: batched bf16 + channels_last against batch-1 fp32 eager; the generator alone; served.

    (device "cpu" runs the same steps as a smoke test of this code on a machine without a GPU.)
    """
    gpu_frames = 64 if quick else 1024
    big = 64 if quick else 256
    kp = motion(gpu_frames)
    fast = Predictor(run, device, backend="torch", max_batch=big)
    slow = Predictor(run, device, backend="torch", max_batch=1, precision="fp32", channels_last=False)
    skeletons = fast.skeletons(kp, (1280, 720))
    for p in (fast, slow):
        p.generate(skeletons[:big])
    t_fast = timed(lambda: fast.generate(skeletons), 3)
    t_slow = timed(lambda: slow.generate(skeletons[:gpu_frames // 8]), 3) * 8
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    print(f"\n3. GPU {name}: generator at {fast.size} px, {gpu_frames} frames")
    print(f"   generator alone, batch {big}, {fast.backend.precision}, channels_last  {gpu_frames / t_fast:9.1f} frames/s "
          f"(raw frames, no encoding; target >= 10,000: {'met' if gpu_frames / t_fast >= 10_000 else 'NOT met'})")
    print(f"   batch 1, fp32 eager                       {gpu_frames / t_slow:9.1f} frames/s")
    print(f"   speed-up {t_slow / t_fast:.2f}x (target >= 5x: {'met' if t_slow / t_fast >= 5 else 'NOT met'})")
    proc, address = start_engine(run, device, big, log)
    try:
        with Client(address, timeout=120) as c:
            list(c.render(fast.name, kp[:big], source_size=(1280, 720), fmt="raw", chunk=big))
            t_served = timed(lambda: list(c.render(fast.name, kp, source_size=(1280, 720), fmt="raw",
                                                   chunk=big, in_flight=2)), 3)
        print(f"   served (raw, batch {big}, normalize + draw + generate + transfer)  {gpu_frames / t_served:9.1f} frames/s")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
