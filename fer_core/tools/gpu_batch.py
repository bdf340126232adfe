"""Train several runs side by side on one GPU inside a fixed wall-clock budget, and pack each
finished run (float16 weights) into one tar to carry back.

GPU time is often rented by the minute, and one small network leaves most of a GPU idle, so several
``train.py`` processes share it. A one-cycle schedule only pays off if it ends, so each run's
epoch count is sized up front: a short probe runs every job at once and measures each
architecture's epoch period *while all of them are running* (a probe epoch that overlapped a
job still starting up or already done is not counted, or the sizing runs past the budget), and
how long a run takes after its last epoch (reloading the best epoch, the final evaluation and
report): a run killed in that gap keeps its weights but loses its metrics and report.

    python -m fer_core.tools.gpu_batch --data /tmp/fer2013 --budget 540 --out-dir /tmp/runs --pack-dir packs/ \\
        --runs fernet_l:21 fernet_l:22 fernet_m:21 -- --optimizer sgd_nesterov --lr 0.05 --val-seed 0 ...

Arguments after ``--`` go to every ``train.py`` unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) ")
SAFETY = 0.85  # share of the measured time a run may plan to use: contention varies over a run


@dataclass
class Job:
    arch: str
    seed: int
    out: Path
    process: subprocess.Popen | None = None
    epoch_ends: list[float] = field(default_factory=list)  # monotonic time each epoch's line appeared
    exited: float | None = None  # monotonic time its output closed: the process is done
    killed: bool = False
    reader: threading.Thread | None = None


def parse_runs(specs: list[str]) -> list[tuple[str, int]]:
    try:
        return [(s.split(":")[0], int(s.split(":")[1])) for s in specs]
    except (IndexError, ValueError):
        raise SystemExit(f"--runs takes ARCH:SEED pairs, got {' '.join(specs)}") from None


def start(job: Job, data: str, epochs: int, train_args: list[str]) -> None:
    """One ``train.py`` process; a thread stamps each finished epoch as its log line arrives."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train.py", "--data", data, "--arch", job.arch, "--seed", str(job.seed),
           "--epochs", str(epochs), *train_args, "--out", str(job.out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    log = open(f"{job.out}.log", "w")
    job.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def read() -> None:
        for line in job.process.stdout:
            log.write(line)
            if EPOCH_LINE.match(line):
                job.epoch_ends.append(time.monotonic())
        job.exited = time.monotonic()
        log.close()

    job.reader = threading.Thread(target=read, daemon=True)
    job.reader.start()


def wait(jobs: list[Job], deadline: float) -> None:
    """Wait for every job; one still running at the deadline is killed (its best epoch so far stays)."""
    for job in jobs:
        try:
            job.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.killed = True
            print(f"{job.out.name}: killed at the deadline after {len(job.epoch_ends)} epochs", flush=True)
        job.reader.join(timeout=5)  # its last lines and exit time are read before anyone counts them


def concurrent_periods(jobs: list[Job]) -> dict[str, float]:
    """Each architecture's slowest epoch period among epochs run while every job was mid-run."""
    if any(len(j.epoch_ends) < 2 for j in jobs):
        raise RuntimeError("a probe job ended before its second epoch; see its .log")
    window = (max(j.epoch_ends[0] for j in jobs), min(j.epoch_ends[-1] for j in jobs))
    periods: dict[str, float] = {}
    for job in jobs:
        steps = list(pairwise(job.epoch_ends))
        inside = [b - a for a, b in steps if a >= window[0] and b <= window[1]]
        period = max(inside) if inside else max(b - a for a, b in steps)
        periods[job.arch] = max(periods.get(job.arch, 0.0), period)
    return periods


def wrap_up_seconds(jobs: list[Job]) -> float:
    """The longest time a job that ended by itself took from its last epoch's line to the end of its output."""
    ended = [j for j in jobs if j.exited is not None and j.epoch_ends and not j.killed]
    return max((j.exited - j.epoch_ends[-1] for j in ended), default=0.0)


def plan_epochs(periods: dict[str, float], seconds: float, cap: int) -> dict[str, int]:
    return {arch: max(1, min(cap, int(seconds * SAFETY / p))) for arch, p in periods.items()}


def pack(job: Job, pack_dir: Path) -> Path:
    """The run folder in one tar, weights as float16 (a fernet_l: 12 MB), training state left out."""
    from fer_core.common.atomic import write_atomic
    from fer_core.models.checkpoint import load_checkpoint, save_checkpoint

    weights = job.out / "model.safetensors"
    if weights.is_file():
        model, cfg = load_checkpoint(weights)
        save_checkpoint(model, cfg, weights, storage="float16")
    (job.out / "resume.safetensors").unlink(missing_ok=True)
    def write(tmp: Path) -> None:  # whole or absent: a budget that ends mid-pack must not leave half a tar
        with tarfile.open(tmp, "w") as tar:
            tar.add(job.out, arcname=job.out.name)
            tar.add(f"{job.out}.log", arcname=f"{job.out.name}/train.log")

    return write_atomic(pack_dir / f"{job.out.name}.tar", write)


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(prog="python -m fer_core.tools.gpu_batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True, metavar="ARCH:SEED")
    ap.add_argument("--budget", type=float, required=True, help="seconds from now until every tar must be written")
    ap.add_argument("--out-dir", type=Path, default=Path("runs"))
    ap.add_argument("--pack-dir", type=Path, required=True)
    ap.add_argument("--probe-epochs", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=300)
    ap.add_argument("--pack-seconds", type=float, default=20, help="time kept back for packing")
    args = ap.parse_args(ours)
    runs = parse_runs(args.runs)

    probe_dir = Path(tempfile.mkdtemp(prefix="gpu_batch_probe_"))
    probes = [Job(a, s, probe_dir / f"{a}-seed{s}") for a, s in runs]
    launched = time.monotonic()
    for job in probes:
        start(job, args.data, args.probe_epochs, train_args)
    wait(probes, t0 + args.budget / 3)
    periods = concurrent_periods(probes)
    startup = max(j.epoch_ends[0] - launched - periods[j.arch] for j in probes)  # imports, data, CUDA
    wrap_up = wrap_up_seconds(probes)
    end_training = t0 + args.budget - args.pack_seconds
    seconds = end_training - time.monotonic() - max(startup, 0.0) - wrap_up
    epochs = plan_epochs(periods, seconds, args.max_epochs)
    print(f"probe: epoch periods {periods} s, start-up {startup:.0f} s, wrap-up {wrap_up:.0f} s; epochs {epochs}",
          flush=True)

    jobs = [Job(a, s, args.out_dir / f"gpu-{a}-seed{s}") for a, s in runs]
    for job in jobs:
        start(job, args.data, epochs[job.arch], train_args)
    wait(jobs, end_training)
    args.pack_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        print(f"packed {pack(job, args.pack_dir)} ({len(job.epoch_ends)}/{epochs[job.arch]} epochs)", flush=True)
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
