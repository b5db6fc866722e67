"""The generator behind one call, on torch or on OpenVINO: uint8 skeletons in, uint8 frames out.

    name, device = resolve_backend("auto", "auto")       # ("torch", cuda) on a GPU, ("openvino", cpu) on a CPU
    backend = load_backend(name, run_dir, config, device)
    frames = backend.run(skeletons)                      # (B, S, S, C_in) uint8 -> (B, S, S, C_out) uint8

Both backends run one module, `Frames(generator)`: NHWC uint8 in, tensors.to_model, the generator,
tensors.to_uint8, NHWC uint8 out. So pixel scaling and rounding are the same code whichever runs,
and OpenVINO's frames agree with torch's within 1/255 (a test checks it). Whatever heads the
generator has (an alpha channel, a previous-frame input) come through, as its channel counts.

OpenVINO (CPU): the run's generator is converted at load time (openvino.convert_model, traced from
an example input) and the IR is cached beside the run, keyed by the sha256 of its weights:

    RUN_DIR/openvino/<sha256>.xml, .bin    the IR (fp32 weights: compressing to fp16 moves frames)
    RUN_DIR/openvino/<sha256>.json         written last: the weights' and the IR files' sha256, the
                                           image size, the OpenVINO version and FORMAT

A cache is used only when that manifest matches the weights, the run's config, this OpenVINO and
the IR files' hashes; anything else (stale weights, another OpenVINO, a truncated or edited file)
is converted again and replaces it. With a good cache the torch generator is not even built. A
run folder that cannot be written (a read-only install) is converted in memory, each time.

One LATENCY-compiled model runs everything: every core works on each frame (a live preview's one
frame as fast as it goes), and a batch goes through an AsyncInferQueue, one frame per request, so
copying one frame's data overlaps the next one's inference. Not THROUGHPUT streams (a frame per
core): on 2 cores they measured 4-10% faster for batches, a lone frame gets one core, and they
compute a frame slightly differently (1/255 here and there), so a frame would depend on the batch
it happened to share; here it never does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.model.device import autocast, resolve_amp, resolve_device
from engine.model.runs import GENERATOR, load_generator
from engine.model.tensors import to_model, to_uint8

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
CACHE = "openvino"          # the IR cache's folder in a run
QUEUE = 2                   # infer requests in flight for a batch: one runs while the other's data is copied
# fp32 said outright: on CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO would otherwise pick bf16.
COMPILE = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
FORMAT = 1                  # of the cached IR: Frames' contract; bump when it changes


class Frames(nn.Module):
    """generator, with the pixel conversions at both ends: (B, S, S, C) uint8 -> (B, S, S, C') uint8."""

    def __init__(self, generator: nn.Module, channels_last: bool = False):
        super().__init__()
        self.generator = generator
        self.channels_last = channels_last

    def forward(self, skeletons: torch.Tensor) -> torch.Tensor:
        # (B, H, W, C) -> (B, C, H, W): a permuted view, which is already channels_last in memory
        x = to_model(skeletons.permute(0, 3, 1, 2))
        if not self.channels_last:
            x = x.contiguous()
        return to_uint8(self.generator(x)).permute(0, 2, 3, 1)


def in_channels(generator: nn.Module) -> int:
    """Channels of the generator's input (3: the skeleton; more with a previous-frame input)."""
    return next(m for m in generator.modules() if isinstance(m, nn.Conv2d)).in_channels


def resolve_backend(backend: str, device: str) -> tuple[str, torch.device]:
    """(backend, device) for --backend and --device: auto is torch on CUDA and OpenVINO on a CPU.

    OpenVINO runs on the CPU: with --device cuda it is a UserError; with --device auto it takes
    the CPU. Without the openvino package, auto falls back to torch (with a warning).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "openvino":
        if str(device).startswith("cuda"):
            raise UserError("--backend openvino runs on the CPU: use --device cpu (or auto), or --backend torch "
                            "for a CUDA GPU")
        _import_openvino()
        return "openvino", torch.device("cpu")
    dev = resolve_device(device)
    if backend == "torch" or dev.type != "cpu":
        return "torch", dev
    try:
        _import_openvino()
    except UserError as e:
        log.warning("%s; running on torch", e)
        return "torch", dev
    return "openvino", dev


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("--backend openvino needs the openvino package (pip install openvino)") from None
    return openvino


def load_backend(name: str, run_dir: Path, config: dict, device: torch.device, *,
                 amp: str = "auto", channels_last: bool | None = None):
    """TorchBackend or OpenVINOBackend for the run's generator (`name` from resolve_backend).

    UserError for a run whose weights are missing, unreadable or do not match its config.
    """
    run_dir = Path(run_dir)
    if name == "openvino":
        return OpenVINOBackend(openvino_model(run_dir, config), run_dir)
    generator, _ = load_generator(run_dir, device)
    return TorchBackend(generator, device, amp=amp, channels_last=channels_last)


class TorchBackend:
    """Eager PyTorch; on CUDA with mixed precision (amp: device.resolve_amp) and channels_last."""

    name = "torch"

    def __init__(self, generator: nn.Module, device: torch.device, *, amp: str = "auto",
                 channels_last: bool | None = None):
        cuda = device.type == "cuda"
        self.device = device
        self.amp = resolve_amp(amp, device)
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        if cuda:
            torch.backends.cudnn.benchmark = True    # few distinct batch shapes: tune each once
        if self.channels_last:
            generator = generator.to(memory_format=torch.channels_last)
        self.generator = generator
        self.frames = Frames(generator, self.channels_last)

    @property
    def precision(self) -> str:
        return "fp32" if self.amp == "off" else self.amp

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.amp):
            y = self.frames(torch.from_numpy(batch).to(self.device, non_blocking=True))
        return y.contiguous().cpu().numpy()


class OpenVINOBackend:
    """An OpenVINO model on the CPU, LATENCY-compiled: every core on each frame, frames queued asynchronously."""

    name = "openvino"
    precision = "fp32"
    device = torch.device("cpu")

    def __init__(self, model, run_dir: Path):
        self.ov = _import_openvino()
        shape = model.inputs[0].get_partial_shape()
        model.reshape([1, *(d.get_length() for d in list(shape)[1:])])   # static: faster than a dynamic batch
        self.model, self.run_dir = model, run_dir
        self._compiled = self._request = self._queue = self._out = self._generator = None

    @property
    def generator(self) -> nn.Module:
        """The torch module these weights came from (loaded on first use: OpenVINO does not need it)."""
        if self._generator is None:
            self._generator, _ = load_generator(self.run_dir, "cpu")
        return self._generator

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._compiled is None:                  # on first use: a server that never renders compiles at warm-up
            self._compiled = self.ov.Core().compile_model(self.model, "CPU", COMPILE)
            self._request = self._compiled.create_infer_request()
            self._queue = self.ov.AsyncInferQueue(self._compiled, QUEUE)
            self._queue.set_callback(self._done)
        if len(batch) == 1:
            return self._request.infer({0: batch})[0].copy()
        output = self._compiled.outputs[0]
        self._out = out = np.empty((len(batch), *list(output.get_shape())[1:]), output.get_element_type().to_dtype())
        for i in range(len(batch)):
            self._queue.start_async({0: batch[i:i + 1]}, i)      # waits while every request is busy
        self._queue.wait_all()
        self._out = None
        return out

    def _done(self, request, index: int) -> None:
        self._out[index] = request.get_output_tensor(0).data[0]


# --- the IR cache -----------------------------------------------------------------------------

def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def openvino_model(run_dir: Path, config: dict):
    """The run's generator as an openvino.Model: from the cache when it can be trusted, else converted."""
    ov = _import_openvino()
    weights = run_dir / GENERATOR
    if not weights.is_file():
        raise UserError(f"{run_dir} has no {GENERATOR} (has training saved a checkpoint yet?)")
    digest = sha256(weights)
    folder = run_dir / CACHE
    expected = {"format": FORMAT, "weights_sha256": digest, "size": int(config["size"]), "openvino": ov.__version__}
    model = _cached(ov, folder, digest, expected)
    if model is not None:
        return model
    log.info("converting %s for OpenVINO (cached in %s)", weights, folder)
    generator, _ = load_generator(run_dir, "cpu")          # UserError on unreadable or mismatched weights
    model = convert(generator)
    # What runs is always the saved IR, read back: save_model transforms the graph (fusions), and a
    # model fresh from convert_model computes a few pixels 1/255 apart from the cached one.
    try:
        _store(ov, model, folder, digest, expected)
        stored = _cached(ov, folder, digest, expected)
        if stored is not None:
            return stored
    except OSError as e:              # a read-only run folder: convert again next time
        log.warning("could not cache the OpenVINO model in %s (%s); converting again next time", folder, e)
    with tempfile.TemporaryDirectory(prefix="pix2dance-openvino-") as tmp:
        xml = Path(tmp) / "generator.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return ov.Core().read_model(xml.read_bytes(), ov.Tensor(np.fromfile(xml.with_suffix(".bin"), np.uint8)))


def convert(generator: nn.Module):
    """openvino.convert_model of Frames(generator), any batch size."""
    ov = _import_openvino()
    generator = generator.float().cpu().eval()
    size, channels = int(generator.size), in_channels(generator)
    example = torch.zeros(1, size, size, channels, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")               # tracing warns about Python-side shapes it sees as constants
        return ov.convert_model(Frames(generator).eval(), example_input=example,
                                input=[ov.PartialShape([-1, size, size, channels])])


def _cached(ov, folder: Path, digest: str, expected: dict):
    """The cached model for these weights, or None (missing, stale or damaged: never trusted)."""
    paths = [folder / f"{digest}{ext}" for ext in (".json", ".xml", ".bin")]
    if not all(p.is_file() for p in paths):
        return None
    try:
        manifest = json.loads(paths[0].read_text())
        found = {**expected, "xml_sha256": sha256(paths[1]), "bin_sha256": sha256(paths[2])}
        if manifest != found:
            log.warning("the OpenVINO cache in %s does not match (stale or damaged): converting again", folder)
            return None
        return ov.Core().read_model(str(paths[1]), str(paths[2]))
    except (OSError, ValueError, RuntimeError) as e:
        log.warning("the OpenVINO cache in %s is unreadable (%s): converting again", folder, str(e).splitlines()[0])
        return None


def _store(ov, model, folder: Path, digest: str, expected: dict) -> None:
    """Write the IR and its manifest atomically (manifest last) and remove other, stale entries."""
    folder.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp.", dir=folder))
    try:
        ov.save_model(model, str(tmp / f"{digest}.xml"), compress_to_fp16=False)
        manifest = {**expected, "xml_sha256": sha256(tmp / f"{digest}.xml"), "bin_sha256": sha256(tmp / f"{digest}.bin")}
        (tmp / f"{digest}.json").write_text(json.dumps(manifest, indent=1))
        for ext in (".bin", ".xml", ".json"):
            os.replace(tmp / f"{digest}{ext}", folder / f"{digest}{ext}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.iterdir():
        if not old.name.startswith(digest) and not old.name.startswith(".tmp."):
            old.unlink(missing_ok=True)
