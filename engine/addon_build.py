"""`pix2dance addon --out DIR`: build the installable Blender extension .zip.

    pix2dance addon --out dist        # -> dist/pix2dance-0.1.0.zip (Edit > Preferences > Get Extensions > Install from Disk)

The zip holds, at its root: blender_addon's modules and blender_manifest.toml; `engine/` with the
engine's two layers the add-on uses, `engine.wire` and `engine.rig` (with the mapping presets), engine/atomic.py and
the package's __init__.py (taken from the engine at build time, never committed into blender_addon/:
the add-on imports them through blender_addon/_engine.py);
and pyzmq wheels for Blender's Python 3.11 on Linux x86_64, macOS (arm64 and x86_64: one
universal2 wheel) and Windows amd64, listed in the manifest's `wheels`. Blender installs the
wheel that fits the machine when the extension is installed.

Wheels come from `pip download --only-binary=:all: --platform ... --python-version 3.11 --no-deps
pyzmq==<the version this environment uses>` and are cached in ~/.cache/pix2dance/wheels
(PIX2DANCE_WHEELS overrides), so later builds work offline. Without network and cache the build
stops with a UserError that says where to put the wheels.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engine.atomic import atomic_file
from engine.errors import UserError

log = logging.getLogger("pix2dance.addon")

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
ENGINE = ROOT / "engine"
MANIFEST = "blender_manifest.toml"
SHIPPED_LAYERS = ("wire", "rig")       # shipped as <add-on>/engine/<layer>/, with engine/__init__.py
WHEELS_MARKER = "# wheels: filled in by `pix2dance addon` at build time"
PYTHON = "3.11"                       # Blender 4.2-5.x's Python
FALLBACK_PYZMQ = "27.1.0"             # when this environment has no pyzmq to match


@dataclass(frozen=True)
class Target:
    """One platform to bundle a wheel for: pip's --platform tags, and how to spot its wheel file."""
    name: str
    pip_platforms: tuple[str, ...]
    wheel_pattern: str                # fnmatch on the file name's platform tag


TARGETS = (
    Target("linux-x64", ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64"), "*linux*_x86_64*"),
    Target("macos-arm64", ("macosx_11_0_arm64", "macosx_10_15_universal2"), "*macosx_*_arm64*|*macosx_*_universal2*"),
    Target("macos-x64", ("macosx_10_15_x86_64", "macosx_10_15_universal2"), "*macosx_*_x86_64*|*macosx_*_universal2*"),
    Target("windows-x64", ("win_amd64",), "*win_amd64*"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("PIX2DANCE_WHEELS") or Path.home() / ".cache" / "pix2dance" / "wheels")


def pyzmq_version() -> str:
    """The pyzmq this environment runs (what the client is tested with), else a known-good one."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("pyzmq")
    except PackageNotFoundError:
        return FALLBACK_PYZMQ


def _matches(filename: str, target: Target, version: str) -> bool:
    if not filename.startswith(f"pyzmq-{version}-cp311-cp311-") or not filename.endswith(".whl"):
        return False
    platform_tag = filename[:-4].split("-")[-1]
    return any(fnmatch.fnmatch(platform_tag, p) for p in target.wheel_pattern.split("|"))


def cached_wheel(target: Target, version: str, cache: Path) -> Path | None:
    found = sorted(p for p in cache.glob("pyzmq-*.whl") if _matches(p.name, target, version)) if cache.is_dir() else []
    return found[0] if found else None


def fetch_wheel(target: Target, version: str, cache: Path) -> Path:
    """The cached pyzmq wheel for `target`, downloaded with pip first when missing."""
    wheel = cached_wheel(target, version, cache)
    if wheel is not None:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps", "--disable-pip-version-check",
           "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp311", "--dest", str(cache)]
    for tag in target.pip_platforms:
        cmd += ["--platform", tag]
    cmd.append(f"pyzmq=={version}")
    log.info("downloading pyzmq %s for %s", version, target.name)
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheel = cached_wheel(target, version, cache)
    if result.returncode != 0 or wheel is None:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"could not get the pyzmq {version} wheel for {target.name} (Python {PYTHON}): "
                        f"{said[-1] if said else 'pip found none'}; put it in {cache} to build offline")
    return wheel


def addon_files() -> list[Path]:
    """The add-on's own files (sources, presets, manifest), without caches or stray copies."""
    files = []
    for path in sorted(ADDON.rglob("*")):
        rel = path.relative_to(ADDON)
        if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".zip") \
                or rel.name.startswith("."):
            continue
        if rel.parts[0] == "engine":
            raise UserError(f"blender_addon/{rel} must not exist: the build ships the engine's own (delete it)")
        files.append(path)
    return files


def engine_files() -> list[Path]:
    """What the add-on needs of the engine: engine/__init__.py, atomic.py, and the wire and rig layers."""
    files = [ENGINE / "__init__.py", ENGINE / "atomic.py"]
    for layer in SHIPPED_LAYERS:
        files += [p for p in sorted((ENGINE / layer).rglob("*"))
                  if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts]
    return files


def manifest_text(wheels: list[str]) -> str:
    """blender_manifest.toml with its `wheels` list filled in."""
    text = (ADDON / MANIFEST).read_text()
    if WHEELS_MARKER not in text:
        raise UserError(f"blender_addon/{MANIFEST} lacks the line {WHEELS_MARKER!r}")
    listing = "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]"
    text = text.replace(WHEELS_MARKER, listing)
    tomllib.loads(text)  # a broken manifest fails here, not at install time in Blender
    return text


def build(out: str | os.PathLike, *, cache: Path | None = None, version: str | None = None) -> Path:
    """Write OUT/pix2dance-<version>.zip; returns its path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    manifest = tomllib.loads((ADDON / MANIFEST).read_text())
    cache = cache or cache_dir()
    version = version or pyzmq_version()
    wheels = sorted({fetch_wheel(t, version, cache) for t in TARGETS})
    files = addon_files()
    target = out / f"{manifest['id']}-{manifest['version']}.zip"
    with atomic_file(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for path in files:
                rel = path.relative_to(ADDON).as_posix()
                if rel == MANIFEST:
                    z.writestr(MANIFEST, manifest_text([w.name for w in wheels]))
                else:
                    z.write(path, rel)
            for path in engine_files():
                z.write(path, path.relative_to(ROOT).as_posix())
            for wheel in wheels:
                z.write(wheel, f"wheels/{wheel.name}")
    size = target.stat().st_size / 1e6
    log.info("wrote %s (%.1f MB): %d add-on files, %s, pyzmq %s wheels: %s", target, size, len(files),
             "engine." + " and engine.".join(SHIPPED_LAYERS), version, ", ".join(w.name for w in wheels))
    return target
