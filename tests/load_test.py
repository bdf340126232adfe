"""A load test that drives the real app as a small public service would be used.

    .venv/bin/python -m tests.load_test --sessions 8 [--out tests/artifacts/load_report.json]

It starts ``streamlit run streamlit_app.py`` on loopback in an isolated state (its own runs, cache and a
generated data set; ``FER_PUBLIC=1``), starts a small training run in the same runs directory (the
server's machine is busy, as it is when someone trains), and lets N visitors use the app at once from
one headless Chromium, one browser context each: first visit, the Photo page with a photo of their own,
for some a short clip on the Video page, for others the Metrics page and back Home. Every visitor checks
that the page answers for *its* upload (the face count, size and file name its own photo gives offline,
with the app's default model and detector), so answers leaking between sessions are caught, not only
slowness. It measures each action's latency, the server's memory (RSS of the streamlit process and its
children, sampled every 0.2 s), page exceptions and tracebacks in the server log, and writes a JSON report.

Everything is bounded: each action has its own timeout and the whole run a global one, after which the
report says which visitors were still waiting and where. ``tests/test_load.py`` runs it under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, ROOT, free_port, start_app

FIXTURES = ROOT / "tests" / "fixtures" / "faces"
DEFAULT_REPORT = ARTIFACTS / "load_report.json"
HOME_TITLE = "fer — facial emotion recognition"
PHOTO_CAPTION = re.compile(r"(\d+) faces? · (\d+)×(\d+)")
"""The Photo page's caption under each annotated image: the face count and the image size."""
PHOTO_NO_FACE = "No face found in this image"
VIDEO_TRACKS = re.compile(r"(\d+) face tracks? found")
"""The Video page's summary once a clip is analysed (kept when the page gains a progress bar and Stop)."""
VIDEO_NO_FACE = "No face found in the analysed frames"
EXCEPTION = "[data-testid=stException]"
_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr (seconds since import), so a slow or stuck run shows where it is."""
    print(f"[load {time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Timeouts:
    """Per-action limits in seconds: generous, since 2 busy cores may queue a visitor behind seven others
    and a training run; the global limit is what bounds the whole run."""

    page: float = 120.0
    photo: float = 150.0
    video: float = 180.0
    metrics: float = 240.0
    total: float = 360.0


# --------------------------------------------------------------------------- what each visitor does


@dataclass
class Visitor:
    """One browser session's plan and the answers it must see (computed offline, in this process)."""

    index: int
    photo: Path
    photo_faces: int
    photo_size: tuple[int, int]  # (width, height), as the page's caption writes it
    clip: Path | None = None
    clip_tracks: int | None = None
    metrics: bool = False

    @property
    def photo_caption(self) -> str | None:
        n, (w, h) = self.photo_faces, self.photo_size
        return f"{n} face{'s' if n != 1 else ''} · {w}×{h}" if n else None


@dataclass
class VisitResult:
    """What one visitor saw and how long each action took; filled in as the visit goes, so a visit cut
    short by the global timeout still reports what it had done and where it stood."""

    index: int
    photo: str
    clip: str | None
    step: str = "not started"
    latencies: list[tuple[str, float]] = field(default_factory=list)
    photo_seen: dict | None = None
    video_seen: dict | None = None
    photo_ok: bool | None = None
    video_ok: bool | None = None
    cross_talk: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: bool = False


def _group(pictures: dict, faces: list[tuple[str, float, tuple[int, int], bool]], seed: int) -> np.ndarray:
    """A 640x480 group photo of the fixture portraits at the given (name, scale, centre, mirrored)."""
    from fer_core.recognition.scenes import group_scene

    return group_scene([(pictures[n], s, 0.0, c, m) for n, s, c, m in faces], seed=seed).image


def make_photos(folder: Path) -> list[Path]:
    """Eight different photos, 0 to 5 faces: the four fixtures as they are, and four group photos made of
    the two real portraits (1, 5, 0, 2, 1, 3, 0, 4 faces in this order), so neighbours differ in answer."""
    from fer_core.recognition.scenes import load_pictures, photo_group

    pictures = load_pictures(FIXTURES)
    a, g = "astronaut.png", "grace_hopper.jpg"
    made = {
        "group5.png": photo_group(pictures).image,
        "pair.png": _group(pictures, [(a, 0.6, (170, 240), False), (g, 0.5, (470, 240), False)], seed=5),
        "trio.png": _group(pictures, [(a, 0.45, (120, 240), False), (g, 0.4, (320, 240), False),
                                      (a, 0.45, (520, 240), True)], seed=7),
        "four.png": _group(pictures, [(a, 0.4, (160, 130), False), (g, 0.33, (480, 130), True),
                                      (g, 0.33, (160, 360), False), (a, 0.4, (480, 360), True)], seed=11),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in made.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    order = ["astronaut.png", "group5.png", "coffee.png", "pair.png", "grace_hopper.jpg", "trio.png",
             "chelsea.png", "four.png"]
    return [folder / n if n in made else FIXTURES / n for n in order]


def make_clip(photo: Path, out: Path) -> Path:
    """A 2 s clip (20 frames at 10 fps) of ``photo`` panning 3 px a frame: small enough for a busy server."""
    from tests.conftest import write_test_video

    rgb = cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]  # yuv420p wants even sides
    write_test_video(out, [np.roll(rgb, 3 * i, axis=1) for i in range(20)], fps=10, codec="mpeg4")
    return out


def expected_faces(photo: Path) -> tuple[int, tuple[int, int]]:
    """What the Photo page answers with its defaults (first detector, default model, default settings),
    computed the way the page does; must run with the server's environment (same active model)."""
    from fer_core.models.active import model_choices
    from fer_core.recognition.detect import DETECTORS, DetectorSettings, available_detectors
    from fer_core.recognition.imageio import decode_image
    from fer_core.recognition.recognizer import Recognizer

    detector = available_detectors()[0]
    rec = Recognizer.load(next(iter(model_choices().values())), tta=False, detector=detector)
    decoded = decode_image(photo.read_bytes())
    settings = DetectorSettings(margin=float(DETECTORS[detector].margin))
    return len(rec.predict(decoded.rgb, order="rgb", settings=settings, whole=None)), decoded.size


def expected_tracks(clip: Path) -> int:
    """The Video page's track count with its defaults (every 5th frame, no smoothing, default sizes)."""
    from fer_core.recognition.detect import DetectorSettings, available_detectors
    from fer_core.recognition.recognizer import Recognizer
    from fer_core.recognition.video import analyse_video

    rec = Recognizer.load(detector=available_detectors()[0])
    result = analyse_video(clip, rec, every=5, smoothing=0.0, settings=DetectorSettings())
    return len({row["track_id"] for row in result.rows})


def plan_visitors(sessions: int, work: Path) -> list[Visitor]:
    """Visitor i uploads photo i mod 8 under a name of its own; every third also analyses a clip (1, 5 and
    0 faces in turn); odd ones also open Metrics and go back Home."""
    photos = make_photos(work / "photos")
    clip_sources = photos[:3]  # astronaut (1 face), group5 (5), coffee (0)
    visitors = []
    for i in range(sessions):
        src = photos[i % len(photos)]
        photo = work / "uploads" / f"visitor{i:02d}-{src.name}"
        photo.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, photo)
        faces, size = expected_faces(photo)
        v = Visitor(i, photo, faces, size, metrics=i % 2 == 1)
        if i % 3 == 0:
            clip_src = clip_sources[(i // 3) % 3]
            v.clip = make_clip(clip_src, work / "uploads" / f"visitor{i:02d}-{clip_src.stem}.mp4")
            v.clip_tracks = expected_tracks(v.clip)
        visitors.append(v)
    return visitors


# --------------------------------------------------------------------------- the server side


def isolated_env(work: Path, data: Path) -> dict[str, str]:
    """The variables that keep the server, the training run and the offline answers away from the
    developer's runs, caches and promoted model (as ``tests/conftest.py::_isolated_state`` does)."""
    return {"FER_RUNS_DIR": str(work / "runs"), "FER_CACHE_DIR": str(work / "cache"), "FER_DATA": str(data),
            "FER_PUBLIC": "1"}


DEPLOYMENT_PREFIXES = ("FER_WEIGHTS", "FER_MAX_", "FER_PUBLIC", "FER_ADMIN", "FER_ALLOW")
"""Settings a developer's shell may hold that would change the answers or the caps (as conftest drops them)."""


@contextlib.contextmanager
def applied_env(values: dict[str, str]) -> Iterator[None]:
    """Exactly ``values`` among the deployment settings of this process for the duration, then restore:
    the launcher and the offline answers read the runs directory and the model from the environment,
    like the server, which inherits this environment."""
    names = [n for n in os.environ if n.startswith(DEPLOYMENT_PREFIXES)]
    saved = {k: os.environ.get(k) for k in [*values, *names]}
    for k in names:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ServerLog:
    """Drains the server's stdout (a full pipe would stall it) into memory and a file."""

    def __init__(self, proc: subprocess.Popen, path: Path) -> None:
        self.lines: list[str] = []
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._thread.start()

    def _drain(self, proc: subprocess.Popen) -> None:
        with open(self._path, "w") as fh:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                fh.write(line)
                fh.flush()

    def join(self) -> None:
        """After the server stopped: its last lines (a traceback at shutdown) are in."""
        self._thread.join(10)

    def tracebacks(self) -> list[str]:
        """Each traceback's last line (the exception), which is what a reader of the report needs."""
        out, inside = [], False
        for line in self.lines:
            if "Traceback" in line:
                inside = True
            elif inside and line.strip() and not line.startswith((" ", "\t")):
                out.append(line.strip())
                inside = False
        return out + (["(traceback cut off at the end of the log)"] if inside else [])


class RssSampler:
    """Samples the RSS of a process and all its children every ``every`` seconds in a thread: the peak
    of a Streamlit server under load is brief (a model loading, eight photos decoded at once)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = self.first = self.last = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        import psutil

        total = 0
        try:
            for p in [self._proc, *self._proc.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.last = self.sample()
            self.peak = max(self.peak, self.last)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.last = self.sample()
        self.peak = max(self.peak, self.last)


def start_training(data: Path) -> Path:
    """A tiny-network run on the generated data, launched as the Training page launches one (detached
    worker, launcher lock, same runs directory), sized to outlast the visits (it is stopped at the end).
    Explicit default caps: ``FER_PUBLIC`` may forbid visitors to train; this stands for the operator."""
    from fer_core.runs.app_settings import AppSettings
    from fer_core.runs.launcher import start_run
    from fer_core.training.loop import TrainConfig

    cfg = TrainConfig(data=str(data), arch="tiny", epochs=100, batch_size=32, optimizer="amsgrad", lr=0.01,
                      schedule="none", augment=True, device="cpu")
    return start_run(cfg, AppSettings())


def wait_training(run: Path, timeout_s: float = 90.0) -> str:
    """Until the worker trains (its first step) so the visits meet a busy machine; returns the status."""
    from fer_core.runs.store import load_run

    deadline = time.monotonic() + timeout_s
    status = "starting"
    while time.monotonic() < deadline:
        status = load_run(run).status
        if status != "starting" and status != "preparing":
            return status
        time.sleep(0.5)
    return status


def stop_training(run: Path) -> dict:
    """Cancel the run (SIGTERM to its worker only) and say how far it got and how it ended."""
    from fer_core.runs.control import cancel_run
    from fer_core.runs.errors import RunError
    from fer_core.runs.store import load_run

    before = load_run(run)
    info = {"run": run.name, "status_at_end": before.status, "epoch": before.progress.get("epoch"),
            "epochs": before.progress.get("epochs")}
    with contextlib.suppress(RunError):
        cancel_run(run, wait_s=30)
    deadline = time.monotonic() + 30
    while load_run(run).status in ("starting", "preparing", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    info["status_after_stop"] = load_run(run).status
    return info


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- one visit (async Playwright)


async def wait_ready(page, timeout_s: float) -> None:
    """``tests.browser_support.wait_ready`` for the async API (same selectors): connected, and the
    script has finished its run."""
    ms = timeout_s * 1000
    await page.wait_for_selector("[data-testid=stAppViewContainer]", timeout=ms)
    await page.wait_for_selector("[data-testid=stApp][data-test-connection-state=CONNECTED]", timeout=ms)
    await page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=ms)


async def open_page(page, title: str, heading: str, timeout_s: float) -> None:
    """Click the page's link in the sidebar, as a visitor does, and wait for its heading and the end of
    its script (as the existing browser tests' ``_open_page``)."""
    await page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click(timeout=timeout_s * 1000)
    await page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=timeout_s * 1000)
    await wait_ready(page, timeout_s)


async def timed(result: VisitResult, kind: str, action: Awaitable) -> object:
    """Await ``action`` as step ``kind``, recording its latency (start to result visible)."""
    result.step = kind
    start = time.monotonic()
    value = await action
    result.latencies.append((kind, time.monotonic() - start))
    say(f"visitor {result.index}: {kind} {result.latencies[-1][1]:.1f} s")
    return value


async def check_exceptions(page, result: VisitResult, where: str) -> None:
    """Streamlit's exception box is how a failing script shows on the page."""
    boxes = page.locator(EXCEPTION)
    for text in await boxes.all_inner_texts():
        result.exceptions.append(f"{where}: {text.strip()[:400]}")


async def first_visit(page, url: str, timeout_s: float) -> None:
    await page.goto(url, timeout=timeout_s * 1000)
    await page.get_by_role("heading", name=HOME_TITLE).wait_for(timeout=timeout_s * 1000)
    await wait_ready(page, timeout_s)


async def upload_and_wait(page, path: Path, done, timeout_s: float) -> None:
    """Upload ``path`` and wait until ``done`` (a locator of the result) shows: the visitor's latency."""
    await page.locator("input[type=file]").first.set_input_files(str(path), timeout=timeout_s * 1000)
    await done.first.wait_for(timeout=timeout_s * 1000)


async def read_photo(page, names: list[str]) -> dict:
    """What the Photo page shows: the captions (count and size), the no-face warning, and which of all
    the visitors' file names head a result."""
    captions = await page.get_by_text(PHOTO_CAPTION).all_inner_texts()
    no_face = await page.get_by_text(PHOTO_NO_FACE).count()
    headings = [n for n in names if await page.get_by_role("heading", name=n).count()]
    faces = [int(m.group(1)) for c in captions if (m := PHOTO_CAPTION.search(c))]
    return {"captions": [c.strip() for c in captions], "no_face_warning": no_face, "headings": headings,
            "faces": faces[0] if len(faces) == 1 else (0 if not faces and no_face else None)}


def judge_photo(v: Visitor, seen: dict, others: dict[str, str | None]) -> tuple[bool, list[str]]:
    """Right answer for this visitor's own photo, and any sign of another visitor's answer."""
    own = v.photo.name
    if v.photo_faces:
        right = seen["captions"] == [v.photo_caption] and seen["no_face_warning"] == 0
    else:
        right = seen["captions"] == [] and seen["no_face_warning"] == 1
    right = right and seen["headings"] == [own]
    leaks = [f"photo heading of {n}" for n in seen["headings"] if n != own]
    leaks += [f"caption '{c}' of {n}" for c in seen["captions"] for n, cap in others.items()
              if cap == c and c != v.photo_caption]
    return right, leaks


async def read_video(page) -> dict:
    """The Video page's summary: tracks found, or the no-face warning. (The uploader shortens file names,
    so the clip is told apart by its answer: the visitors' clips give 1, 5 and 0 tracks.)"""
    summary = await page.get_by_text(VIDEO_TRACKS).all_inner_texts()
    no_face = await page.get_by_text(VIDEO_NO_FACE).count()
    tracks = [int(m.group(1)) for s in summary if (m := VIDEO_TRACKS.search(s))]
    return {"summary": [s.strip() for s in summary], "no_face_warning": no_face,
            "tracks": tracks[0] if len(tracks) == 1 else (0 if not tracks and no_face else None)}


async def visit(browser, url: str, v: Visitor, everyone: list[Visitor], result: VisitResult,
                limits: Timeouts, delay: float) -> None:
    """One visitor's whole visit; an action that fails ends the visit (the next ones depend on it) and is
    recorded, never raised, so the other visitors go on."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.on("pageerror", lambda exc: result.js_errors.append(str(exc)[:300]))
    try:
        await asyncio.sleep(delay)  # visitors arrive over a few seconds, not in the same millisecond
        await timed(result, "first_visit", first_visit(page, url, limits.page))
        await check_exceptions(page, result, "home")
        await photo_step(page, v, everyone, result, limits)
        if v.clip is not None:
            await video_step(page, v, everyone, result, limits)
        if v.metrics:
            await timed(result, "metrics", open_metrics(page, limits.metrics))
            await check_exceptions(page, result, "metrics")
            await timed(result, "home", open_page(page, "Home", HOME_TITLE, limits.page))
            await check_exceptions(page, result, "home again")
        result.step = "done"
        result.done = True
    except Exception as exc:  # a timeout or a vanished element: this visitor's visit failed here
        result.errors.append(f"visitor {v.index} at {result.step}: {type(exc).__name__}: {str(exc)[:500]}")
        say(result.errors[-1][:200])
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(context.close(), 30)


async def photo_step(page, v: Visitor, everyone: list[Visitor], result: VisitResult, limits: Timeouts) -> None:
    await timed(result, "open_photo", open_page(page, "Photo", "Photo", limits.page))
    done = page.get_by_text(PHOTO_CAPTION).or_(page.get_by_text(PHOTO_NO_FACE))
    await timed(result, "photo", upload_and_wait(page, v.photo, done, limits.photo))
    await wait_ready(page, limits.photo)
    result.photo_seen = await read_photo(page, [o.photo.name for o in everyone])
    others = {o.photo.name: o.photo_caption for o in everyone if o is not v}
    result.photo_ok, leaks = judge_photo(v, result.photo_seen, others)
    result.cross_talk += leaks
    await check_exceptions(page, result, "photo")


async def video_step(page, v: Visitor, everyone: list[Visitor], result: VisitResult, limits: Timeouts) -> None:
    await timed(result, "open_video", open_page(page, "Video", "Video", limits.page))
    done = page.get_by_text(VIDEO_TRACKS).or_(page.get_by_text(VIDEO_NO_FACE))
    await timed(result, "video", upload_and_wait(page, v.clip, done, limits.video))
    await wait_ready(page, limits.video)
    result.video_seen = seen = await read_video(page)
    result.video_ok = seen["tracks"] == v.clip_tracks and len(seen["summary"]) + seen["no_face_warning"] == 1
    wrong = {o.clip_tracks for o in everyone if o.clip is not None and o is not v} - {v.clip_tracks}
    if seen["tracks"] in wrong:
        result.cross_talk.append(f"{seen['tracks']} tracks, another visitor's answer")
    await check_exceptions(page, result, "video")


async def open_metrics(page, timeout_s: float) -> None:
    """Metrics shows the default model's accuracy: evaluated on the data set (locally) or precomputed /
    from its model card (a public deployment evaluates nothing on request); an Accuracy metric either way."""
    await open_page(page, "Metrics", "Metrics", timeout_s)
    await page.locator("[data-testid=stMetric]", has_text="Accuracy").first.wait_for(timeout=timeout_s * 1000)


async def drive(url: str, visitors: list[Visitor], limits: Timeouts, budget_s: float,
                stagger_s: float) -> tuple[list[VisitResult], str | None]:
    """All visits at once in one Chromium (a context per visitor); returns the results and, when the
    global budget ran out, a message naming who was still waiting where."""
    from playwright.async_api import async_playwright

    results = [VisitResult(v.index, v.photo.name, v.clip.name if v.clip else None) for v in visitors]
    timeout_msg = None
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            tasks = [asyncio.create_task(visit(browser, url, v, visitors, r, limits, i * stagger_s))
                     for i, (v, r) in enumerate(zip(visitors, results, strict=True))]
            _, pending = await asyncio.wait(tasks, timeout=max(1.0, budget_s))
            if pending:
                late = [f"visitor {r.index} at {r.step}" for r in results if not r.done and not r.errors]
                timeout_msg = (f"global timeout: the load test ran out of its {limits.total:.0f} s; still waiting: "
                               + ", ".join(late))
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=30)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 30)
    return results, timeout_msg


# --------------------------------------------------------------------------- the report


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: with few samples, a value that was actually measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_table(results: list[VisitResult]) -> dict[str, dict]:
    by_kind: dict[str, list[float]] = {}
    for r in results:
        for kind, seconds in r.latencies:
            by_kind.setdefault(kind, []).append(seconds)
    return {k: {"n": len(v), "p50_s": round(percentile(v, 50), 2), "p95_s": round(percentile(v, 95), 2),
                "max_s": round(max(v), 2)} for k, v in by_kind.items()}


def machine(load_at_start: float) -> dict:
    """The figures' context: cores, memory and how busy the machine was besides (1-minute load average)."""
    import psutil

    return {"cpu_cores": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "load_avg_1m_start": load_at_start,
            "load_avg_1m_end": round(os.getloadavg()[0], 2)}


def build_report(visitors: list[Visitor], results: list[VisitResult], rss: RssSampler, log: ServerLog,
                 training: dict, timeout_msg: str | None, wall_s: float, load_at_start: float) -> dict:
    mb = 2**20
    errors = [e for r in results for e in r.errors] + ([timeout_msg] if timeout_msg else [])
    tracebacks = log.tracebacks()
    report = {
        "sessions": len(visitors), "wall_s": round(wall_s, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_at_start), "latency": latency_table(results),
        "server_rss_mb": {"start": round(rss.first / mb), "peak": round(rss.peak / mb), "end": round(rss.last / mb)},
        "training": training, "errors": errors, "timed_out": timeout_msg is not None,
        "page_exceptions": [e for r in results for e in r.exceptions], "server_tracebacks": tracebacks,
        "js_errors": [e for r in results for e in r.js_errors],
        "cross_talk": [f"visitor {r.index}: {c}" for r in results for c in r.cross_talk],
        "wrong_answers": wrong_answers(visitors, results),
        "visits": [{**asdict(r), "expected": {"faces": v.photo_faces, "caption": v.photo_caption,
                                              "tracks": v.clip_tracks}}
                   for v, r in zip(visitors, results, strict=True)],
    }
    report["ok"] = not (errors or report["page_exceptions"] or tracebacks or report["cross_talk"]
                        or report["wrong_answers"] or not all(r.done for r in results))
    return report


def wrong_answers(visitors: list[Visitor], results: list[VisitResult]) -> list[str]:
    out = []
    for v, r in zip(visitors, results, strict=True):
        if r.photo_ok is False:
            out.append(f"visitor {v.index} ({v.photo.name}): expected {v.photo_faces} faces "
                       f"({v.photo_caption or 'no-face warning'}), saw {r.photo_seen}")
        if r.video_ok is False:
            out.append(f"visitor {v.index} ({v.clip.name}): expected {v.clip_tracks} tracks, saw {r.video_seen}")
    return out


# --------------------------------------------------------------------------- the whole run


def run_load_test(sessions: int = 8, out: Path | None = DEFAULT_REPORT, limits: Timeouts | None = None,
                  stagger_s: float = 0.5) -> dict:
    """Set up, drive ``sessions`` visitors at once, tear everything down and return (and write) the report.

    Raises ``FileNotFoundError`` when Chromium is missing, and whatever stops the set-up (the server not
    starting, the run refused); what happens during the visits lands in the report.
    """
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"Chromium is not installed at {CHROMIUM}")
    limits = limits or Timeouts()
    out = Path(out) if out else None
    work = Path(tempfile.mkdtemp(prefix="fer-load-"))
    try:
        report = _run(sessions, work, out.with_suffix(".server.log") if out else work / "server.log", limits,
                      stagger_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report


def _run(sessions: int, work: Path, log_path: Path, limits: Timeouts, stagger_s: float) -> dict:
    """The run inside its scratch folder: server, training run and visitors, each stopped whatever fails."""
    from tests.conftest import write_folder_dataset

    t0, load_at_start = time.monotonic(), round(os.getloadavg()[0], 2)
    data = write_folder_dataset(work / "data" / "fer2013", {"train": 300, "test": 4})
    env = isolated_env(work, data)
    proc = log = rss = run = None
    training: dict = {}
    try:
        with applied_env(env):
            visitors = plan_visitors(sessions, work)
            say(f"{sessions} visitors planned, answers computed offline")
            run = start_training(data)
            training["status_at_start"] = wait_training(run)
            say(f"training run {run.name}: {training['status_at_start']}")
            proc = start_app(dict(os.environ), port := free_port())
            say(f"server up on port {port}")
            log = ServerLog(proc, log_path)
            rss = RssSampler(proc.pid)
            budget = limits.total - (time.monotonic() - t0)
            results, timeout_msg = asyncio.run(drive(f"http://127.0.0.1:{port}", visitors, limits, budget, stagger_s))
    finally:
        if rss:
            rss.stop()
        if proc:
            stop_server(proc)
        if log:
            log.join()
        if run:
            with applied_env(env):
                training.update(stop_training(run))
    report = build_report(visitors, results, rss, log, training, timeout_msg, time.monotonic() - t0, load_at_start)
    report["server_log"] = str(log_path)
    return report


def summary(report: dict) -> str:
    """A few lines for a terminal: the figures first, then what went wrong."""
    lines = [f"{report['sessions']} visitor(s) in {report['wall_s']} s on {report['machine']['cpu_cores']} cores; "
             f"server RSS start/peak/end {report['server_rss_mb']['start']}/{report['server_rss_mb']['peak']}/"
             f"{report['server_rss_mb']['end']} MB; training {report['training'].get('status_at_end')} "
             f"(epoch {report['training'].get('epoch')})"]
    for kind, s in report["latency"].items():
        lines.append(f"  {kind:12s} n={s['n']:2d}  p50 {s['p50_s']:6.2f} s  p95 {s['p95_s']:6.2f} s  "
                     f"max {s['max_s']:6.2f} s")
    for key in ("errors", "wrong_answers", "cross_talk", "page_exceptions", "server_tracebacks"):
        lines += [f"  {key}: {item}" for item in report[key]]
    lines.append("OK" if report["ok"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="visitors at once (default 8)")
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORT, help=f"report JSON (default {DEFAULT_REPORT})")
    parser.add_argument("--timeout", type=float, default=Timeouts.total, help="global limit in seconds")
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between two visitors' arrivals")
    args = parser.parse_args(argv)
    try:
        report = run_load_test(args.sessions, args.out, Timeouts(total=args.timeout), args.stagger)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(summary(report))
    print(f"report: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
