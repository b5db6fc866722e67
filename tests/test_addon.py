"""The Blender add-on, headless (bpy 5.0.1), against a real engine process on loopback.

A small generic-named test rig (Hips, UpperArm.L, ...) with a camera and linear keys on the left
arm is built with bpy; the engine serves conftest's tiny untrained run. Background mode never
fires bpy.app.timers: render_to_sequencer runs to completion, the live preview is driven by
calling jobs.tick(), and cancels and engine deaths are staged from render_job.AFTER_FRAME hooks, which
run in the render worker after each PNG is written.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon import (connection, jobs, operators, preferences, preview,  # noqa: E402
                           render_job, sequencer)
from engine.rig.mapping import saved_mapping  # noqa: E402
from engine.wire import protocol  # noqa: E402
from engine.wire.client import Client, ClientError  # noqa: E402
from tests.conftest import make_tiny_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

RIG_BONES = [  # name, head, tail, parent: generic names, 1.75 m tall, facing -Y (the camera)
    ("Hips", (0, 0, 1.0), (0, 0, 1.1), None),
    ("Spine", (0, 0, 1.1), (0, 0, 1.4), "Hips"),
    ("Neck", (0, 0, 1.4), (0, 0, 1.5), "Spine"),
    ("Head", (0, 0, 1.5), (0, 0, 1.75), "Neck"),
]
for _side, _s in (("L", 1), ("R", -1)):
    RIG_BONES += [
        (f"UpperArm.{_side}", (0.2 * _s, 0, 1.4), (0.2 * _s, 0, 1.12), "Spine"),
        (f"LowerArm.{_side}", (0.2 * _s, 0, 1.12), (0.2 * _s, 0, 0.86), f"UpperArm.{_side}"),
        (f"Hand.{_side}", (0.2 * _s, 0, 0.86), (0.2 * _s, 0, 0.78), f"LowerArm.{_side}"),
        (f"UpperLeg.{_side}", (0.1 * _s, 0, 1.0), (0.1 * _s, 0, 0.55), "Hips"),
        (f"LowerLeg.{_side}", (0.1 * _s, 0, 0.55), (0.1 * _s, 0, 0.1), f"UpperLeg.{_side}"),
        (f"Foot.{_side}", (0.1 * _s, 0, 0.1), (0.1 * _s, -0.15, 0.02), f"LowerLeg.{_side}"),
        (f"Toe.{_side}", (0.1 * _s, -0.15, 0.02), (0.1 * _s, -0.22, 0.02), f"Foot.{_side}"),
    ]
ARM_KEYS = ((1, 0), (4, 40), (8, 80), (12, 120))  # (frame, degrees): the left arm rises


def key_arm(arm, frame: int, degrees: float) -> None:
    pb = arm.pose.bones["UpperArm.L"]
    pb.rotation_mode = "XYZ"
    pb.rotation_euler = (0.0, 0.0, math.radians(degrees))
    pb.keyframe_insert("rotation_euler", frame=frame)
    for fc in fcurves(arm.animation_data.action):
        for k in fc.keyframe_points:
            k.interpolation = "LINEAR"  # so moving one key changes only the frames up to its neighbours


def fcurves(action) -> list:
    """An action's F-curves: Blender 5 keeps them in layers/strips/channelbags (no Action.fcurves)."""
    if hasattr(action, "layers"):
        return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                for fc in bag.fcurves]
    return list(action.fcurves)


def build_scene(frames: int = 12):
    """A fresh file: the test rig, a camera framing it (320 x 240), linear keys on the left arm."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = bpy.data.armatures.new("Rig")
    arm = bpy.data.objects.new("Rig", data)
    scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for name, head, tail, parent in RIG_BONES:
        b = data.edit_bones.new(name)
        b.head, b.tail = head, tail
        if parent:
            b.parent = data.edit_bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(cam)
    cam.location, cam.rotation_euler = (0, -6, 0.9), (math.radians(90), 0, 0)
    scene.camera = cam
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = 320, 240, 100
    scene.frame_start, scene.frame_end = 1, frames
    for frame, degrees in ARM_KEYS:
        key_arm(arm, frame, degrees)
    scene.frame_set(1)
    return scene, arm, cam


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(run_dir: Path, keys: Path | None = None, more: tuple[Path, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`python -m engine.cli serve RUN [MORE ...] --bind tcp://127.0.0.1:<free port>`, pinged until it answers."""
    address = f"tcp://127.0.0.1:{free_port()}"
    curve = ["--curve-secret", str(keys / "server.key_secret"), "--curve-clients", str(keys / "clients")] if keys else []
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", str(run_dir), *map(str, more),
                             "--bind", address, "--device", "cpu", "--quiet", *curve], cwd=ROOT)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with status {proc.returncode}")
        try:
            with Client(address, timeout=2.0,
                        curve=(keys / "server.key", keys / "client.key_secret") if keys else None) as c:
                c.ping()
            return proc, address
        except ClientError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A run from before mattes (3 channels): it can give only the bare crop."""
    return make_tiny_run(tmp_path_factory.mktemp("run") / "old", channels=3)


@pytest.fixture(scope="module")
def temporal_run(tmp_path_factory) -> Path:
    """A run whose generator sees its previous frame (engine.model.temporal)."""
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tempo", temporal=True)


@pytest.fixture(scope="module")
def engine(tiny_run, old_run, temporal_run):
    """One engine serving the tiny run (with a matte; the engine's first model), the old run and a temporal one."""
    proc, address = start_engine(tiny_run, more=(old_run, temporal_run))
    yield address
    stop(proc)


@pytest.fixture
def addon(monkeypatch):
    """The add-on registered as a plain package (no preferences entry: FALLBACK applies), short timeout."""
    monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs(timeout=3.0))
    blender_addon.register()
    yield
    blender_addon.unregister()


@pytest.fixture
def rig(addon, engine, tmp_path):
    scene, arm, cam = build_scene()
    s = scene.pix2dance
    s.armature, s.camera, s.engine_address = arm, cam, engine
    s.output_dir = str(tmp_path / "out") + "/"
    s.frame_start, s.frame_end = 1, 12
    return scene, arm, cam


def image_pixels(path: Path):
    """(H, W, 3) float RGB of an image file, top row first."""
    import numpy as np
    image = bpy.data.images.load(str(path))
    w, h = image.size
    px = np.array(image.pixels[:], np.float32).reshape(h, w, 4)[::-1, :, :3]
    bpy.data.images.remove(image)
    return px


def render_sequencer(scene, frame: int, path: Path):
    """What the sequencer shows at `frame`, rendered to path.png (RGB: over black) and read back."""
    scene.frame_set(frame)
    scene.render.use_sequencer = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return image_pixels(path.with_suffix(".png"))


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*.png"))


def our_strips(scene) -> list:
    return [s for s in sequencer.strips_of(scene.sequence_editor) if s.get(sequencer.TAG)] \
        if scene.sequence_editor else []


# --- registration ------------------------------------------------------------------------------

def test_register_unregister_twice(monkeypatch):
    monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs())
    for _ in range(2):
        blender_addon.register()
        blender_addon.register()  # registering again while registered starts clean
        assert hasattr(bpy.types.Scene, "pix2dance")
        for op in ("auto_map", "test_connection", "preview_frame", "render_to_sequencer", "retarget_bvh"):
            assert hasattr(bpy.ops.pix2dance, op), op
            getattr(bpy.ops.pix2dance, op).get_rna_type()  # raises KeyError when not registered
        ours = [h for h in bpy.app.handlers.frame_change_post if h.__name__ == "on_frame_change"]
        assert len(ours) == 1
        s = bpy.context.scene.pix2dance
        assert s.output_dir == "//pix2dance/" and s.scene_underneath is False
        assert preferences.get_prefs().address == preferences.DEFAULT_ADDRESS  # no prefs entry: defaults
        blender_addon.unregister()
        assert not hasattr(bpy.types.Scene, "pix2dance")
        assert not [h for h in bpy.app.handlers.frame_change_post if h.__name__ == "on_frame_change"]
        assert not bpy.app.timers.is_registered(jobs.tick)
        with pytest.raises((KeyError, AttributeError, RuntimeError)):
            bpy.ops.pix2dance.render_to_sequencer.get_rna_type()
    blender_addon.unregister()  # unregistering twice is harmless


class RecordingLayout:
    """Stands in for bpy.types.UILayout (there is none headless) and checks what a draw() names:
    every property must exist on its data and every operator must be registered."""

    def __init__(self, log):
        self.log, self.alert, self.active, self.enabled = log, False, True, True

    def _sub(self, *a, **k):
        return RecordingLayout(self.log)
    column = row = box = split = _sub

    def label(self, text="", icon="NONE"):
        self.log.append(("label", text))

    def prop(self, data, name, **k):
        props = data.bl_rna.properties.keys() if hasattr(data, "bl_rna") else vars(data)
        assert name in props, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **k):
        self.prop(data, name)
        assert search_name in search_data.bl_rna.properties.keys()

    def operator(self, idname, **k):
        module, name = idname.split(".")
        getattr(getattr(bpy.ops, module), name).get_rna_type()
        self.log.append(("operator", idname))

    def operator_menu_enum(self, idname, prop, **k):
        self.operator(idname)

    def template_list(self, listtype, list_id, data, name, active_data, active_name, **k):
        assert hasattr(bpy.types, listtype) and name in data.bl_rna.properties.keys()
        self.log.append(("list", name))


def test_panels_and_preferences_draw(rig):
    from types import SimpleNamespace
    from blender_addon import panels
    scene, arm, _ = rig
    bpy.ops.pix2dance.auto_map()
    scene.pix2dance.last_error = "something went wrong"
    log = []
    for cls in panels.CLASSES:
        if issubclass(cls, bpy.types.Panel):
            cls.draw(SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    row = scene.pix2dance.mapping[0]
    panels.PIX2DANCE_UL_mapping.draw_item(None, bpy.context, RecordingLayout(log), scene.pix2dance, row, 0, None, "", 0)
    p = preferences.PIX2DANCE_AP_preferences
    fake_prefs = SimpleNamespace(layout=RecordingLayout(log), engine_address="", timeout=1.0, curve_server_key="",
                                 curve_client_key="", start_local_engine=False, local_run_dir="", command="")
    p.draw(fake_prefs, bpy.context)
    ops = {x[1] for x in log if x[0] == "operator"}
    assert {"pix2dance.render_to_sequencer", "pix2dance.preview_frame", "pix2dance.auto_map",
            "pix2dance.test_connection", "pix2dance.retarget_bvh", "pix2dance.use_scene_range"} <= ops
    assert ("label", "something went wrong") in log and ("list", "mapping") in log


# --- errors are reports, never tracebacks ----------------------------------------------------------

def test_test_connection_without_engine_reports_error(addon, monkeypatch):
    monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs(timeout=1.0))
    build_scene()
    s = bpy.context.scene.pix2dance
    s.engine_address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="unreachable or timed out"):
        bpy.ops.pix2dance.test_connection()
    assert time.monotonic() - start < 5
    assert s.connected is False and "unreachable" in s.last_error


def test_other_protocol_version_is_a_report(addon):
    """A fake engine on loopback that speaks protocol v99: the report says so, no traceback."""
    import threading
    import zmq
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop_flag = threading.Event()

    def serve():
        while not stop_flag.is_set():
            if router.poll(50):
                ident, head, *_ = router.recv_multipart()
                rid = json.loads(head)["id"]
                router.send_multipart([ident, json.dumps({"v": 99, "id": rid, "kind": "ping", "time": 0}).encode()])
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        build_scene()
        s = bpy.context.scene.pix2dance
        s.engine_address = f"tcp://127.0.0.1:{port}"
        with pytest.raises(RuntimeError, match="another protocol version"):
            bpy.ops.pix2dance.test_connection()
        assert "v99" in s.last_error and not s.connected
    finally:
        stop_flag.set()
        thread.join()
        router.close()
        ctx.term()


class FakeEngine:
    """A ZeroMQ ROUTER on loopback speaking the wire protocol with a scripted render behaviour: for
    protocol corner cases a real engine will not produce on demand (a full queue: "busy"), and for a
    matte known exactly (`matte`: a model with alpha whose "source" frame is a red disc of radius
    DISC x the height, centred on the pose's mid-hip, and transparent elsewhere)."""
    DISC = 0.1

    def __init__(self, busy_first: int = 0, matte: bool = False):
        import threading
        import zmq
        self.busy_left, self.renders, self.matte, self.outputs = busy_first, [], matte, []
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        from engine.wire import joints, protocol
        while not self._stop.is_set():
            if not self.router.poll(20):
                continue
            ident, head, *binary = self.router.recv_multipart()
            h = json.loads(head)
            rid, kind = h["id"], h["kind"]
            if kind == "info":
                model = {"name": "fake", "size": 64, "joints": list(joints.JOINTS), "alpha": self.matte}
                reply = [protocol.header(rid, "info", protocol=2, server="fake", models=[model])]
            elif kind == "render" and self.busy_left > 0:
                self.busy_left -= 1
                reply = protocol.error(rid, "busy", "queue full: try again later")
            elif kind == "render" and self.matte:
                self.renders.append(list(h["frames"]))
                self.outputs.append({**h["output"], "fps": h.get("fps")})
                reply = self._discs(rid, h, binary[0])
            elif kind == "render":
                self.renders.append(list(h["frames"]))
                reply = [protocol.header(rid, "render", model="fake", frames=h["frames"], format="png",
                                         width=64, height=64, channels=3)]
                reply += [b"\x89PNG fake frame %d" % f for f in h["frames"]]
            else:
                reply = [protocol.header(rid, kind, time=0.0)]
            self.router.send_multipart([ident, *reply])

    def _discs(self, rid, h, data) -> list:
        import cv2
        import numpy as np
        from engine.wire import protocol
        w, h_px = h["source_size"]
        kp = np.frombuffer(data, "<f4").reshape(len(h["frames"]), len(h["joints"]), 3)
        hips = [h["joints"].index("left_hip"), h["joints"].index("right_hip")]
        images, placements = [], []
        for pose in kp:
            x, y = pose[hips, :2].mean(axis=0)
            rgba = np.zeros((h_px, w, 4), np.uint8)
            cv2.circle(rgba, (round(x), round(y)), round(self.DISC * h_px), (255, 0, 0, 255), -1)
            images.append(cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes())
            placements.append([1.0, 0.0, float(x) - 32, 0.0, 1.0, float(y) - 32])
        return [protocol.header(rid, "render", model="fake", frames=h["frames"], format="png", width=w,
                                height=h_px, channels=4, placements=placements), *images]

    def close(self):
        self._stop.set()
        self._thread.join()
        self.router.close()
        self.ctx.term()


def test_busy_engine_is_asked_again(addon, tmp_path, monkeypatch):
    monkeypatch.setattr(render_job, "BUSY_WAIT", 0.05)
    fake = FakeEngine(busy_first=2)
    try:
        scene, arm, cam = build_scene()
        s = scene.pix2dance
        s.armature, s.camera, s.engine_address = arm, cam, fake.address
        s.output_dir, s.frame_start, s.frame_end, s.chunk = str(tmp_path / "out") + "/", 1, 12, 4
        assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
        assert pngs(tmp_path / "out") == [sequencer.frame_name(f) for f in range(1, 13)]
        assert sorted(f for r in fake.renders for f in r) == list(range(1, 13))  # each frame rendered once
        assert (tmp_path / "out" / "000007.png").read_bytes() == b"\x89PNG fake frame 7"
        fake.busy_left = 100              # always busy: the render gives up with a report
        s.frame_end = 14
        with pytest.raises(RuntimeError, match=r"Engine error \(busy\)"):
            bpy.ops.pix2dance.render_to_sequencer()
    finally:
        fake.close()


def add_set(scene, arm):
    """A set for the scene underneath, in flat Workbench colours shown as they are (Standard view): a blue
    wall behind the rig filling the view, and a yellow block parented to the rig's hips (its body)."""
    shading = scene.display.shading
    shading.light, shading.color_type = "FLAT", "OBJECT"
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.view_settings.view_transform = "Standard"
    scene.render.dither_intensity = 0.0       # exact colours
    made = []
    for name, size, location, colour in (("Wall", (20, 0.1, 20), (0, 3, 1), (0, 0, 1, 1)),
                                         ("Body", (0.3, 0.2, 0.4), (0, 0, 1.2), (1, 1, 0, 1))):
        mesh = bpy.data.meshes.new(name)
        sx, sy, sz = (v / 2 for v in size)
        mesh.from_pydata([(x * sx, y * sy, z * sz) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [],
                         [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
        obj = bpy.data.objects.new(name, mesh)
        obj.location, obj.color = location, colour
        scene.collection.objects.link(obj)
        made.append(obj)
    made[1].parent = arm
    return made


def read_rgba(path: Path):
    """(H, W, 4) uint8 RGBA of a PNG as stored (top row first), and its channel count on disk."""
    import cv2
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.ndim == 3, path
    return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB), raw.shape[2]


def test_the_dancer_stands_over_the_rig(addon, tmp_path):
    """A matte known exactly (FakeEngine(matte=True): a red disc on the pose's mid-hip): what the add-on
    asks for, and where the sequencer shows her, at 50 % of a 320 x 240 render: on the rig's mid-hip."""
    import numpy as np
    from engine.rig import projection
    from engine.wire.joints import INDEX
    fake = FakeEngine(matte=True)
    try:
        scene, arm, cam = build_scene()
        s = scene.pix2dance
        s.armature, s.camera, s.engine_address = arm, cam, fake.address
        s.output_dir, s.frame_start, s.frame_end = str(tmp_path / "out") + "/", 2, 4
        scene.render.resolution_percentage = 50
        scene.render.fps, scene.render.fps_base = 30, 1.001
        scene.view_settings.view_transform = "Standard"
        assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
        assert {o["placement"] for o in fake.outputs} == {"source"} and all(o["alpha"] for o in fake.outputs)
        assert fake.outputs[0]["fps"] == pytest.approx(30 / 1.001)
        rgba, channels = read_rgba(Path(s.output_dir) / "000003.png")
        assert channels == 4 and rgba.shape == (120, 160, 4)
        scene.frame_set(3)
        kp = projection.project(scene, arm, cam, saved_mapping(s))
        hip = kp[[INDEX["left_hip"], INDEX["right_hip"]], :2].mean(axis=0)
        vse = render_sequencer(scene, 3, tmp_path / "vse")
        assert vse.shape == (120, 160, 3)
        ys, xs = np.nonzero((vse[..., 0] > 0.9) & (vse[..., 1:].max(axis=-1) < 0.1))
        assert len(xs) > 50 and np.hypot(xs.mean() - hip[0], ys.mean() - hip[1]) < 1.0
    finally:
        fake.close()


QUIT_WHILE_WAITING = r"""
import sys, time
import bpy, blender_addon
from blender_addon import connection, preview
blender_addon.register()
c = connection.Connection(sys.argv[-1], timeout=60.0)
job = connection.ConnectionJob(bpy.context.scene.name, c)
job.start_worker()                       # waits on an engine that never answers
lp = preview.live_preview()
import numpy as np
lp.request(preview.PreviewRequest(bpy.context.scene.name, 1, np.zeros((23, 3), np.float32), (64, 64), "", c))
time.sleep(0.5)
print("QUITTING", flush=True)
"""


def test_quitting_with_the_engine_gone_does_not_hang(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", QUIT_WHILE_WAITING, address], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "QUITTING" in result.stdout, result.stderr[-2000:]
    assert time.monotonic() - start < 30  # the workers would wait 60 s for the engine; exit does not


def test_local_engine_is_started_and_stopped(addon, tiny_run, monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    prefs = preferences.Prefs(address=address, timeout=2.0, start_local_engine=True, local_run_dir=str(tiny_run),
                              command=f"{sys.executable} -m engine.cli")
    assert preferences.local_engine_command(prefs)[-4:] == ["serve", str(tiny_run), "--bind", address]
    proc = preferences.start_local_engine(prefs)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=2.0) as c:
                    assert tiny_run.name in [m["name"] for m in c.info()["models"]]
                break
            except ClientError:
                assert proc.poll() is None and time.monotonic() < deadline, preferences.local_engine_state()
        assert preferences.local_engine_running()
    finally:
        preferences.stop_local_engine()
    assert proc.poll() is not None and not preferences.local_engine_running()


def test_curve_keys_from_the_preferences(addon, tiny_run, tmp_path, monkeypatch):
    """An engine that demands CURVE keys: refused without the preferences' key files, served with them."""
    keys = tmp_path / "keys"
    assert subprocess.run([sys.executable, "-m", "engine.cli", "keys", "--out", str(keys), "--quiet"],
                          cwd=ROOT).returncode == 0
    proc, address = start_engine(tiny_run, keys)
    try:
        build_scene()
        s = bpy.context.scene.pix2dance
        s.engine_address = address
        monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs(timeout=1.0))
        with pytest.raises(RuntimeError, match="unreachable or timed out"):
            bpy.ops.pix2dance.test_connection()
        monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs(
            timeout=3.0, curve_server_key=str(keys / "server.key"), curve_client_key=str(keys / "client.key_secret")))
        assert bpy.ops.pix2dance.test_connection() == {"FINISHED"} and s.connected
    finally:
        stop(proc)


def test_test_connection_lists_models(rig, tiny_run):
    assert bpy.ops.pix2dance.test_connection() == {"FINISHED"}
    s = rig[0].pix2dance
    assert s.connected and s.last_error == ""
    assert tiny_run.name in s.status and tiny_run.name in connection.MODELS[s.engine_address]


def test_user_errors_are_reports(rig):
    scene, arm, cam = rig
    s = scene.pix2dance
    address, s.engine_address = s.engine_address, "not an address"
    with pytest.raises(RuntimeError, match="not of the form tcp://"):
        bpy.ops.pix2dance.test_connection()
    if not bpy.app.online_access:  # bpy as a module starts offline: remote engines are refused
        s.engine_address = "tcp://10.255.255.1:5555"
        with pytest.raises(RuntimeError, match="online access is off"):
            bpy.ops.pix2dance.test_connection()
    assert protocol.is_loopback("tcp://localhost:5555") and protocol.is_loopback("tcp://[::1]:5555")
    assert not protocol.is_loopback("tcp://192.168.1.20:5555")
    s.engine_address = "tcp://127.0.0.1:notaport"
    with pytest.raises(RuntimeError, match="Cannot use engine address: Invalid argument"):
        bpy.ops.pix2dance.test_connection()
    s.engine_address = address
    s.camera, scene.camera = None, None
    with pytest.raises(RuntimeError, match="No camera"):
        bpy.ops.pix2dance.render_to_sequencer()
    s.camera = cam
    bpy.ops.pix2dance.auto_map()
    row = next(r for r in s.mapping if r.joint == "left_wrist")
    row.bone = ""
    with pytest.raises(RuntimeError, match="left_wrist"):
        bpy.ops.pix2dance.render_to_sequencer()
    row.bone = "Hand.L"
    cam.rotation_euler = (math.radians(-90), 0, 0)  # looks away from the rig
    with pytest.raises(RuntimeError, match="out of the view"):
        bpy.ops.pix2dance.render_to_sequencer()
    with pytest.raises(RuntimeError, match="out of the view"):
        bpy.ops.pix2dance.preview_frame()
    assert not pngs(Path(s.output_dir))
    cam.rotation_euler = (math.radians(90), 0, 0)
    s.model = "nobody"
    with pytest.raises(RuntimeError, match="no model 'nobody'"):
        bpy.ops.pix2dance.render_to_sequencer()
    s.model = ""
    s.frame_start, s.frame_end = 5, 4
    with pytest.raises(RuntimeError, match="ends .4. before it starts .5."):
        bpy.ops.pix2dance.render_to_sequencer()
    s.frame_start, s.frame_end = 1, 4
    out = s.output_dir
    s.output_dir = "//pix2dance/"   # relative to an unsaved .blend
    with pytest.raises(RuntimeError, match="Save the .blend first"):
        bpy.ops.pix2dance.render_to_sequencer()
    s.output_dir = out
    # One render at a time into one folder.
    first = operators.plan_render(scene)
    first.step()                    # it has started (projected) and holds the folder
    with pytest.raises(RuntimeError, match="already running"):
        bpy.ops.pix2dance.render_to_sequencer()
    first.cancel()
    assert first.wait().cancelled and not render_job.RENDERING
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    # Unregistering mid-render abandons the job: it releases its folder and touches nothing more.
    second = operators.plan_render(scene)
    second.step()
    assert render_job.RENDERING
    blender_addon.unregister()
    assert second.finished and second.cancelled and not render_job.RENDERING
    blender_addon.register()


def test_auto_map_operator(rig):
    scene, arm, _ = rig
    assert bpy.ops.pix2dance.auto_map() == {"FINISHED"}
    m = saved_mapping(scene.pix2dance)
    assert m["joints"]["left_wrist"]["bone"] == "Hand.L"
    assert m["joints"]["right_knee"]["bone"] == "LowerLeg.R"
    assert [r.joint for r in scene.pix2dance.mapping if not r.bone] == []


# --- Render to Sequencer ---------------------------------------------------------------------------

def test_render_to_sequencer_12_frames(rig, tiny_run):
    import numpy as np
    from engine.rig import projection
    from engine.wire.joints import CORE, INDEX
    scene, arm, cam = rig
    s = scene.pix2dance
    out = Path(s.output_dir)
    scene.view_settings.view_transform = "Standard"     # the sequencer shows the PNGs' own values
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    assert pngs(out) == [sequencer.frame_name(f) for f in range(1, 13)]
    rgba, channels = read_rgba(out / "000005.png")
    assert channels == 4 and rgba.shape == (240, 320, 4)             # RGBA at the render size
    manifest = json.loads((out / "manifest.json").read_text())
    entries = manifest["frames"]
    assert sorted(map(int, entries)) == list(range(1, 13))
    assert {(e["model"], e["placement"], e["alpha"]) for e in entries.values()} == {(tiny_run.name, "source", True)}
    assert s.warning == ""
    # Where the engine put her: the crop's centre on the rig's projected skeleton, her matte inside the crop.
    scene.frame_set(5)
    kp = projection.project(scene, arm, cam, saved_mapping(s))[[INDEX[n] for n in CORE], :2]
    affine = np.array(entries["5"]["affine"], np.float64).reshape(2, 3)
    side = json.loads((tiny_run / "config.json").read_text())["size"]
    corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]], np.float64) @ affine.T
    centre = corners.mean(axis=0)
    low, high = kp.min(axis=0), kp.max(axis=0)
    assert (low - 0.1 * (high - low) <= centre).all() and (centre <= high + 0.1 * (high - low)).all(), (centre, low, high)
    ys, xs = np.nonzero(rgba[..., 3])
    m = np.abs(affine[:, :2]).sum(axis=1).max() + 1      # a crop pixel's reach (bilinear) in frame pixels
    assert len(xs) and corners[:, 0].min() - m <= xs.min() and xs.max() <= corners[:, 0].max() + m
    assert corners[:, 1].min() - m <= ys.min() and ys.max() <= corners[:, 1].max() + m
    strips = our_strips(scene)
    assert len(strips) == 1
    strip = strips[0]
    assert strip.type == "IMAGE" and len(strip.elements) == 12 and strip.blend_type == "ALPHA_OVER"
    assert (strip.frame_final_start, strip.frame_final_end) == (1, 13)
    assert Path(bpy.path.abspath(strip.directory)).resolve() == out.resolve()
    assert [e.filename for e in strip.elements] == pngs(out)
    assert strip.transform.scale_x == pytest.approx(1.0) == strip.transform.scale_y   # the frame, unscaled
    # Through the sequencer, frame 5 is her RGBA over black (nothing underneath), pixel for pixel.
    vse = np.round(render_sequencer(scene, 5, out.parent / "vse") * 255)
    a = rgba[..., 3:] / 255.0
    assert vse.shape == (240, 320, 3) and np.abs(vse - a * rgba[..., :3]).max() <= 3
    # A rerun renders nothing new and replaces the strip (same channel, still one).
    channel = strip.channel
    job = operators.plan_render(scene).wait()
    assert job.error is None and job.rendered == [] and job.reused == 12
    strips = our_strips(scene)
    assert len(strips) == 1 and strips[0].channel == channel
    # Frames rendered before placements (RGB crops; no placement in the manifest) are rendered again.
    for f in ("2", "3"):
        entries[f].pop("placement")
    sequencer.write_atomic(out / "manifest.json", json.dumps(manifest).encode())
    job = operators.plan_render(scene).wait()
    assert job.error is None and sorted(job.rendered) == [2, 3] and job.reused == 10
    # A later range starts its strip at its own first frame.
    s.frame_start, s.frame_end = 5, 8
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    (strip,) = our_strips(scene)
    assert (strip.frame_final_start, strip.frame_final_end, len(strip.elements)) == (5, 9, 4)


def test_a_model_without_a_matte_gives_its_bare_crop_with_one_warning(rig, old_run):
    """A run from before mattes: Render to Sequencer and the preview fall back to its square crop,
    fitted in the middle of the frame (the old look), and say so in one line."""
    scene, _, cam = rig
    s = scene.pix2dance
    s.model, s.frame_start, s.frame_end = old_run.name, 1, 2
    out = Path(s.output_dir)
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    rgb, channels = read_rgba(out / "000001.png")
    assert channels == 3 and rgb.shape == (64, 64, 3)
    assert json.loads((out / "manifest.json").read_text())["frames"]["1"]["placement"] == "crop"
    (strip,) = our_strips(scene)
    assert strip.transform.scale_x == pytest.approx(240 / 64)       # FIT: the square fills the height
    assert "no matte" in s.warning and "\n" not in s.warning and s.last_error == ""
    s.warning = ""
    assert bpy.ops.pix2dance.preview_frame() == {"FINISHED"}
    image = bpy.data.images[preview.PREVIEW_IMAGE]
    bg = next(bg for bg in cam.data.background_images if bg.image == image)
    assert tuple(image.size) == (64, 64) and bg.display_depth == "BACK" and "no matte" in s.warning


def test_cancel_keeps_frames_and_rerun_fills_the_rest(rig, monkeypatch):
    scene, _, _ = rig
    scene.pix2dance.chunk = 1
    out = Path(scene.pix2dance.output_dir)

    def cancel_after_five(job, written):
        if written == 5:
            job.cancel()
    monkeypatch.setattr(render_job, "AFTER_FRAME", [cancel_after_five])
    job = operators.plan_render(scene).wait(limit=60)
    assert job.cancelled and job.error is None
    assert pngs(out) == [sequencer.frame_name(f) for f in range(1, 6)]
    assert our_strips(scene) == []  # a cancelled render adds no strip
    monkeypatch.setattr(render_job, "AFTER_FRAME", [])
    job = operators.plan_render(scene).wait(limit=60)
    assert job.error is None and not job.cancelled
    assert job.reused == 5 and sorted(job.rendered) == list(range(6, 13))
    assert len(pngs(out)) == 12 and len(our_strips(scene)) == 1


def test_moving_one_key_rerenders_only_the_frames_it_moved(rig):
    scene, arm, _ = rig
    out = Path(scene.pix2dance.output_dir)
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    before = {f: (out / sequencer.frame_name(f)).stat().st_mtime_ns for f in range(1, 13)}
    key_arm(arm, 12, 150)  # the last key moves: linear keys change frames 9-12 only
    job = operators.plan_render(scene).wait()
    assert job.error is None
    assert sorted(job.rendered) == [9, 10, 11, 12] and job.reused == 8
    after = {f: (out / sequencer.frame_name(f)).stat().st_mtime_ns for f in range(1, 13)}
    assert [f for f in range(1, 13) if after[f] != before[f]] == [9, 10, 11, 12]


def test_engine_killed_mid_render_reports_and_keeps_files(addon, tiny_run, tmp_path, monkeypatch):
    proc, address = start_engine(tiny_run)
    try:
        scene, arm, cam = build_scene()
        s = scene.pix2dance
        s.armature, s.camera, s.engine_address, s.chunk = arm, cam, address, 1
        s.output_dir = str(tmp_path / "out") + "/"
        s.frame_start, s.frame_end = 1, 12

        def kill_after_four(job, written):
            if written == 4:
                proc.kill()
                proc.wait()
        monkeypatch.setattr(render_job, "AFTER_FRAME", [kill_after_four])
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="unreachable or timed out"):
            bpy.ops.pix2dance.render_to_sequencer()
        assert time.monotonic() - start < 20
        written = pngs(tmp_path / "out")
        assert 4 <= len(written) < 12 and written[:4] == [sequencer.frame_name(f) for f in range(1, 5)]
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert sorted(manifest["frames"]) == sorted(str(int(n[:6])) for n in written)
        assert our_strips(scene) == [] and "unreachable" in s.last_error
    finally:
        stop(proc)


def test_scene_underneath(rig):
    """The set under the dancer: the scene's own render (Workbench here) in the channel below hers, and
    through the sequencer her alpha over it: the set where alpha is 0. The rig's meshes hidden, then shown."""
    import numpy as np
    scene, arm, _ = rig
    wall, body = add_set(scene, arm)
    s = scene.pix2dance
    s.frame_start, s.frame_end, s.scene_underneath = 2, 4, True
    scene.render.resolution_x, scene.render.resolution_y = 160, 120
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    out = Path(s.output_dir)
    assert pngs(out / sequencer.SCENE_FOLDER) == [sequencer.frame_name(f) for f in (2, 3, 4)]
    dancer, under = sequencer.find_tagged(scene, "dancer"), sequencer.find_tagged(scene, "scene")
    assert dancer.blend_type == "ALPHA_OVER" and under.channel < dancer.channel
    assert under.frame_final_start == dancer.frame_final_start == 2
    assert scene.render.engine == "BLENDER_WORKBENCH" and scene.frame_current == 1 and not body.hide_render
    rgba, channels = read_rgba(out / "000003.png")
    assert channels == 4 and rgba.shape == (120, 160, 4)
    set_px, _ = read_rgba(out / sequencer.SCENE_FOLDER / "000003.png")
    assert (set_px[..., :3] == (0, 0, 255)).all(axis=-1).mean() > 0.9     # the blue wall, and no yellow body
    assert not (set_px[..., :3] == (255, 255, 0)).all(axis=-1).any()
    vse = np.round(render_sequencer(scene, 3, out.parent / "vse") * 255)
    clear = rgba[..., 3] == 0
    assert clear.mean() > 0.3 and np.abs(vse[clear] - set_px[..., :3][clear]).max() <= 1
    a = rgba[..., 3:] / 255.0
    assert np.abs(vse - (a * rgba[..., :3] + (1 - a) * set_px[..., :3])).max() <= 3     # straight alpha, over
    # The rig's meshes shown: the set is rendered again with the body in it; the dancer's frames are kept.
    s.show_rig_meshes = True
    job = operators.plan_render(scene).wait()
    assert job.error is None and job.rendered == [] and job.reused == 3
    set_px, _ = read_rgba(out / sequencer.SCENE_FOLDER / "000003.png")
    assert (set_px[..., :3] == (255, 255, 0)).all(axis=-1).sum() > 50
    # Switched off, the scene's strip goes on the next render.
    s.scene_underneath = False
    assert bpy.ops.pix2dance.render_to_sequencer() == {"FINISHED"}
    assert sequencer.find_tagged(scene, "scene") is None and len(our_strips(scene)) == 1


def test_modal_path_reports_progress_and_esc_cancels(rig, monkeypatch):
    """The UI path of the job operators (modal(), driven by TIMER events), without a UI: events
    are handed in by hand. Each PNG takes 0.2 s longer here, so Esc lands mid-render."""
    from types import SimpleNamespace
    scene, _, _ = rig
    scene.pix2dance.chunk = 1
    monkeypatch.setattr(render_job, "AFTER_FRAME", [lambda job, n: time.sleep(0.2)])

    class Op(operators.JobOperator):          # the mixin alone: bpy operators need Blender's machinery
        def __init__(self):
            self.reports = []

        def report(self, kind, message):
            self.reports.append((set(kind), message))
    op = Op()
    op._job = operators.plan_render(scene)
    timer, esc = SimpleNamespace(type="TIMER", value="NOTHING"), SimpleNamespace(type="ESC", value="PRESS")
    assert op.modal(bpy.context, SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"PASS_THROUGH"}
    deadline = time.monotonic() + 30
    while not op._job.rendered and time.monotonic() < deadline:
        assert op.modal(bpy.context, timer) == {"RUNNING_MODAL"}
        time.sleep(0.05)
    result = op.modal(bpy.context, esc)
    while result == {"RUNNING_MODAL"} and time.monotonic() < deadline:
        result = op.modal(bpy.context, timer)
        time.sleep(0.05)
    assert result == {"CANCELLED"} and ({"WARNING"}, "Render cancelled") in op.reports
    written = pngs(Path(scene.pix2dance.output_dir))
    assert 1 <= len(written) < 12 and our_strips(scene) == []
    assert "cancelled" in scene.pix2dance.status


def test_hiding_the_skin_does_not_move_the_joints(addon):
    """Render to Sequencer (background) hides the rig's skinned meshes while it reads poses."""
    import numpy as np
    from tests.conftest import sample
    from engine.rig import automap, projection
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(sample("rigs/Xbot.glb")))
    scene = bpy.context.scene
    arm = next(o for o in scene.objects if o.type == "ARMATURE")
    pb = arm.pose.bones["mixamorig:LeftArm"]       # Xbot's own clip barely moves: raise an arm
    pb.rotation_mode = "XYZ"
    for frame, degrees in ((1, 0), (8, 70)):
        pb.rotation_euler = (math.radians(degrees), 0, 0)
        pb.keyframe_insert("rotation_euler", frame=frame)
    m = automap.auto_map(arm)
    from engine.rig import camera
    cam = camera.frame_camera(scene, arm, range(1, 9), m)
    plain = projection.project_frames(scene, arm, cam, m, range(1, 9))
    with projection.skins_hidden(arm) as skins:
        assert skins and all(o.hide_viewport for o in skins)
        hidden = projection.project_frames(scene, arm, cam, m, range(1, 9))
    assert not any(o.hide_viewport for o in skins)
    assert np.abs(plain - hidden).max() < 1e-3 and np.ptp(plain[:, :, 0], axis=0).max() > 1  # it moves


# --- preview -------------------------------------------------------------------------------------

def test_preview_frame_shows_an_image(rig):
    scene, _, cam = rig
    scene.frame_set(8)
    assert bpy.ops.pix2dance.preview_frame() == {"FINISHED"}
    image = bpy.data.images[preview.PREVIEW_IMAGE]
    assert tuple(image.size) == (320, 240) and image.channels == 4   # the RGBA frame at the render size
    bg = next(bg for bg in cam.data.background_images if bg.image == image)
    # In front of the camera view, fitted to the camera frame: through the camera, she stands on the rig.
    assert (bg.display_depth, bg.frame_method, bg.alpha) == ("FRONT", "FIT", 1.0) and cam.data.show_background_images
    assert "frame 8" in scene.pix2dance.status and scene.pix2dance.warning == ""
    at_8 = list(image.pixels[:])
    # Without "Show in camera" the image still updates (another pose, other pixels), the camera is left alone.
    cam.data.background_images.clear()
    scene.pix2dance.preview_background = False
    scene.frame_set(12)
    assert bpy.ops.pix2dance.preview_frame() == {"FINISHED"}
    assert len(cam.data.background_images) == 0
    assert bpy.data.images[preview.PREVIEW_IMAGE] == image and list(image.pixels[:]) != at_8


def test_live_preview_shows_the_current_frame_and_drops_stale_replies(rig, monkeypatch):
    monkeypatch.setattr(preview, "FRAMES", preview.FrameCache())    # no poses kept from earlier tests
    scene, _, _ = rig
    s = scene.pix2dance

    def settle(lp, count):
        deadline = time.monotonic() + 20
        while lp.shown + lp.dropped < count and time.monotonic() < deadline:
            jobs.tick()             # background mode: timers never fire, so tick by hand
            time.sleep(0.02)
    s.live_preview = True           # switching it on sends the current frame (1) at once
    try:
        scene.frame_set(3)          # the frame_change_post handler sends frame 3 ...
        scene.frame_set(5)          # ... and then frame 5: replies for 1 and 3 are stale
        lp = preview._live["preview"]
        assert lp is not None
        settle(lp, 3)
        assert (lp.shown, lp.dropped) == (1, 2), (lp.shown, lp.dropped, s.last_error)
        assert "frame 5" in s.status
        assert preview.PREVIEW_IMAGE in bpy.data.images
        # A render moves the scene through its frames itself: the handler stays quiet meanwhile.
        s.frame_start, s.frame_end = 1, 4
        assert operators.plan_render(scene).wait().error is None
        time.sleep(0.3)
        jobs.tick()
        assert (lp.shown, lp.dropped) == (1, 2) and lp._pending is None
        # Only poses not seen before are rendered: frame 5 again, and 13, which holds 12's pose.
        for frame in (12, 13, 5):
            sent, shown = lp.sent, lp.shown
            scene.frame_set(frame)
            settle(lp, lp.shown + lp.dropped + 1)
            assert lp.shown == shown + 1 and f"frame {frame}" in s.status
            assert lp.sent == sent + (frame == 12) and ("unchanged" in s.status) == (frame != 12)
        assert lp.reused == 2
    finally:
        s.live_preview = False
    assert preview._live["preview"] is None




def test_a_temporal_model_continues_the_preview_one_frame_forward_and_starts_cold_otherwise(rig, temporal_run):
    scene, _, _ = rig
    s = scene.pix2dance
    s.model = temporal_run.name
    c = connection.connection_for(scene).open()
    try:
        seen = []
        for frame in (3, 4, 5, 9, 8, 4):             # forward, forward, jump, back, back to 4
            scene.frame_set(frame)
            request = preview.current_pose_request(scene)
            assert request.sequence == preview.sequence_id(scene.name)       # one id for the scene's previews
            seen.append(preview.render_one(c, request))
    finally:
        c.close()
    assert [r.warm for r in seen] == [False, True, True, False, False, False]
    assert not any(r.reused for r in seen)          # a temporal frame is never taken from FRAMES
    assert seen[1].png != seen[5].png               # frame 4 after frame 3 differs from frame 4 cold
    # Render to Sequencer: a fresh sequence per job, the frames all written.
    s.frame_start, s.frame_end = 1, 6
    job = operators.plan_render(scene).wait()
    assert job.error is None and sorted(job.rendered) == list(range(1, 7))
    assert job.sequence != operators.plan_render(scene).sequence


def test_live_preview_with_the_engine_gone_shows_the_error(rig, monkeypatch):
    monkeypatch.setattr(preferences, "FALLBACK", preferences.Prefs(timeout=1.0))
    scene, _, _ = rig
    s = scene.pix2dance
    s.engine_address = f"tcp://127.0.0.1:{free_port()}"
    s.last_error = ""
    s.live_preview = True
    try:
        lp = preview._live["preview"]
        deadline = time.monotonic() + 20
        while not s.last_error and time.monotonic() < deadline:
            jobs.tick()
            time.sleep(0.05)
        assert "unreachable or timed out" in s.last_error and not s.connected
        assert lp.alive and lp.shown == 0   # the worker waits for the next pose, it did not die
    finally:
        s.live_preview = False


# --- mocap -------------------------------------------------------------------------------------------

def test_retarget_bvh_onto_the_rig(rig):
    from tests.conftest import sample
    bvh = sample("mocap/cmu_skeleton_example.bvh")
    scene, arm, _ = rig
    s = scene.pix2dance
    objects = set(bpy.data.objects)
    assert bpy.ops.pix2dance.retarget_bvh(filepath=str(bvh)) == {"FINISHED"}
    assert set(bpy.data.objects) == objects            # the imported BVH armature is removed again
    assert arm.animation_data.action is not None
    # 278 frames at 120 fps -> about 58 frames at the scene's 24 fps; the render range follows.
    assert s.frame_start == 1 and 50 <= s.frame_end <= 60, (s.frame_start, s.frame_end)
    kp = operators.plan_render(scene)  # the rig still maps and renders
    assert kp.plan.frames[-1] == s.frame_end
    with pytest.raises(RuntimeError, match="No BVH file"):
        bpy.ops.pix2dance.retarget_bvh(filepath=str(bvh.with_suffix(".missing")))


def test_import_bvh_as_the_armature(addon):
    from tests.conftest import sample
    bvh = sample("mocap/cmu_131_01_dance.bvh")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    assert bpy.ops.pix2dance.retarget_bvh(filepath=str(bvh), mode="IMPORT") == {"FINISHED"}
    s = scene.pix2dance
    assert s.armature is not None and s.armature.type == "ARMATURE"
    assert not [r.joint for r in s.mapping if not r.bone and r.joint in ("left_wrist", "right_ankle")]
    assert s.camera is not None and s.camera.type == "CAMERA"   # a camera framing the motion was added
    assert s.frame_end > s.frame_start


def test_mapping_rows_say_how_each_bone_was_found_and_a_hand_pick_says_hand(rig):
    from engine.rig import mapping as rig_mapping
    scene, arm, cam = rig
    assert bpy.ops.pix2dance.auto_map() == {"FINISHED"}
    rows = {r.joint: r for r in scene.pix2dance.mapping}
    assert rows["left_wrist"].how in ("name", "structure", "geometry")
    rows["left_wrist"].bone = rows["right_wrist"].bone           # the user overrides one joint by hand
    assert rows["left_wrist"].how == "hand"
    saved = rig_mapping.saved_mapping(scene.pix2dance)
    assert saved["how"]["left_wrist"] == "hand" and saved["how"]["right_wrist"] in ("name", "structure", "geometry")
    rig_mapping.check_mapping(saved)


def test_frames_outside_the_repertoire_are_marked_on_the_timeline(addon):
    scene = bpy.context.scene
    scene.timeline_markers.new("a cue of the choreographer's", frame=3)
    marked = sequencer.mark_guesses(scene, {1: 0.05, 2: 0.6, 3: None, 4: 0.9}, threshold=0.2)
    assert marked == [2, 4]
    assert sorted((m.name, m.frame) for m in scene.timeline_markers) == [
        ("a cue of the choreographer's", 3), (sequencer.GUESS, 2), (sequencer.GUESS, 4)]
    assert sequencer.mark_guesses(scene, {2: 0.1, 4: 0.1}, threshold=0.2) == []      # a re-render clears them
    assert [m.frame for m in scene.timeline_markers if m.name == sequencer.GUESS] == []
    scene.timeline_markers.clear()
