"""The generator behind one call, on torch or on OpenVINO: uint8 skeletons in, uint8 frames out.

    name, device = resolve_backend("auto", "auto")       # ("torch", cuda) on a GPU, ("openvino", cpu) on a CPU
    backend = load_backend(name, run_dir, generator, device)
    frames = backend.run(skeletons)                      # (B, S, S, C_in) uint8 -> (B, S, S, C_out) uint8

Both backends run one module, `Frames(generator)`: NHWC uint8 in, tensors.to_model, the generator,
tensors.to_uint8, NHWC uint8 out. So pixel scaling and rounding are the same code whichever runs,
and OpenVINO's frames agree with torch's within 1/255 (a test checks it). Whatever heads the
generator has (an alpha channel, a previous-frame input) come through, as its channel counts.

OpenVINO (CPU): the run's generator is converted at load time (openvino.convert_model, traced from
an example input) and the IR is cached beside the run, keyed by the sha256 of its weights:

    RUN_DIR/openvino/<sha256>.xml, .bin    the IR (fp32 weights: compressing to fp16 moves frames)
    RUN_DIR/openvino/<sha256>.json         written last: the weights' and the IR files' sha256, the
                                           OpenVINO version and FORMAT

A cache is used only when that manifest matches the weights, this OpenVINO and the bytes read (the
very bytes handed to OpenVINO are the ones hashed); anything else (stale weights, another OpenVINO,
a truncated or edited file) is converted again and replaces it. A run folder that cannot be written
(a read-only install) is converted in memory, each time. A single frame (live preview) runs on a
LATENCY-compiled model (both cores on one frame); a batch runs on a THROUGHPUT-compiled one with
an AsyncInferQueue, one frame per request, so every core works on a frame of its own.
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
from engine.model.runs import GENERATOR
from engine.model.tensors import to_model, to_uint8

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
CACHE = "openvino"          # the IR cache's folder in a run
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


def load_backend(name: str, run_dir: Path, generator: nn.Module, device: torch.device, *,
                 amp: str = "auto", channels_last: bool | None = None):
    """TorchBackend or OpenVINOBackend for the run's generator (see resolve_backend for `name`)."""
    if name == "openvino":
        return OpenVINOBackend(openvino_model(Path(run_dir), generator))
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
        self.frames = Frames(generator, self.channels_last)

    @property
    def precision(self) -> str:
        return "fp32" if self.amp == "off" else self.amp

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.amp):
            y = self.frames(torch.from_numpy(batch).to(self.device, non_blocking=True))
        return y.contiguous().cpu().numpy()


class OpenVINOBackend:
    """An OpenVINO model on the CPU: one frame on a LATENCY-compiled model, batches through an AsyncInferQueue."""

    name = "openvino"
    precision = "fp32"
    device = torch.device("cpu")

    def __init__(self, model):
        ov = _import_openvino()
        self.core = ov.Core()
        shape = model.inputs[0].get_partial_shape()
        model.reshape([1, *(d.get_length() for d in list(shape)[1:])])   # static: faster than a dynamic batch
        self.model = model
        self.latency = self.core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.request = self.latency.create_infer_request()
        self._queue = None
        self._out: np.ndarray | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1:
            return self.request.infer({0: batch})[0].copy()
        queue = self._throughput()
        output = self.latency.outputs[0]
        self._out = out = np.empty((len(batch), *list(output.get_shape())[1:]), output.get_element_type().to_dtype())
        for i in range(len(batch)):
            queue.start_async({0: batch[i:i + 1]}, i)        # waits while every request is busy
        queue.wait_all()
        self._out = None
        return out

    def _throughput(self):
        """The batch path, compiled on first use (a server that only previews never pays for it)."""
        if self._queue is None:
            ov = _import_openvino()
            compiled = self.core.compile_model(self.model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
            self._queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue.set_callback(self._done)
        return self._queue

    def _done(self, request, index: int) -> None:
        self._out[index] = request.get_output_tensor(0).data[0]


# --- the IR cache -----------------------------------------------------------------------------

def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def openvino_model(run_dir: Path, generator: nn.Module):
    """The run's generator as an openvino.Model: from the cache when it can be trusted, else converted."""
    ov = _import_openvino()
    digest = sha256(run_dir / GENERATOR)
    folder = run_dir / CACHE
    model = _cached(ov, folder, digest)
    if model is not None:
        return model
    log.info("converting %s for OpenVINO (cached in %s)", run_dir / GENERATOR, folder)
    model = convert(generator)
    try:
        _store(ov, model, folder, digest)
    except OSError as e:              # a read-only run folder: convert again next time
        log.warning("could not cache the OpenVINO model in %s (%s); converting again next time", folder, e)
    return model


def convert(generator: nn.Module):
    """openvino.convert_model of Frames(generator), any batch size."""
    ov = _import_openvino()
    generator = generator.float().cpu().eval()
    size, channels = _input_size(generator), in_channels(generator)
    example = torch.zeros(1, size, size, channels, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")               # tracing warns about Python-side shapes it sees as constants
        return ov.convert_model(Frames(generator).eval(), example_input=example,
                                input=[ov.PartialShape([-1, size, size, channels])])


def _input_size(generator: nn.Module) -> int:
    size = getattr(generator, "size", None)
    if not size:
        raise ValueError("the generator does not say its image size (Generator.size)")
    return int(size)


def _manifest(digest: str, ov, xml: bytes, weights: bytes) -> dict:
    return {"format": FORMAT, "weights_sha256": digest, "openvino": ov.__version__,
            "xml_sha256": hashlib.sha256(xml).hexdigest(), "bin_sha256": hashlib.sha256(weights).hexdigest()}


def _cached(ov, folder: Path, digest: str):
    """The cached model for these weights, or None (missing, stale or corrupt: never trusted)."""
    paths = [folder / f"{digest}{ext}" for ext in (".json", ".xml", ".bin")]
    if not all(p.is_file() for p in paths):
        return None
    try:
        manifest = json.loads(paths[0].read_text())
        xml, weights = paths[1].read_bytes(), paths[2].read_bytes()
        if manifest != _manifest(digest, ov, xml, weights):
            log.warning("the OpenVINO cache in %s does not match (stale or damaged): converting again", folder)
            return None
        return ov.Core().read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
    except (OSError, ValueError, RuntimeError) as e:
        log.warning("the OpenVINO cache in %s is unreadable (%s): converting again", folder, str(e).splitlines()[0])
        return None


def _store(ov, model, folder: Path, digest: str) -> None:
    """Write the IR and its manifest atomically (manifest last) and remove other, stale entries."""
    folder.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp.", dir=folder))
    try:
        ov.save_model(model, str(tmp / f"{digest}.xml"), compress_to_fp16=False)
        xml, weights = (tmp / f"{digest}.xml").read_bytes(), (tmp / f"{digest}.bin").read_bytes()
        (tmp / f"{digest}.json").write_text(json.dumps(_manifest(digest, ov, xml, weights), indent=1))
        for ext in (".bin", ".xml", ".json"):
            os.replace(tmp / f"{digest}{ext}", folder / f"{digest}{ext}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.iterdir():
        if not old.name.startswith(digest) and not old.name.startswith(".tmp."):
            old.unlink(missing_ok=True)
