"""Train a FER-2013 or FER+ model from the command line (``python train.py`` or ``fer-train``).

    python train.py --data data/fer2013 --arch paper --optimizer amsgrad --lr 0.01 --epochs 1 --subset 200
    python train.py --resume runs/<run>      # continue an interrupted run where it stopped
    torchrun --nproc_per_node=2 train.py ...  # the same run on 2 processes (DistributedDataParallel)

The same ``fer_core.training.loop.train`` runs behind the app's training page; this module only
turns flags into a ``TrainConfig``. Every default lives in ``TrainConfig``.
"""

from __future__ import annotations

import argparse
import sys

from fer_core.models.zoo import list_models
from fer_core.training import distributed
from fer_core.training.loop import OPTIMIZERS, SCHEDULES, TrainConfig, TrainingError, resume, train
from fer_core.training.targets import TARGET_MODES


def parse_args(argv: list[str] | None = None) -> TrainConfig | str:
    """A new run's config, or the folder of a run to resume."""
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--resume", metavar="RUN", help="continue this interrupted or cancelled run from its last "
                                                    "finished epoch, with its own saved settings (give no others)")
    ap.add_argument("--data", default=d.data,
                    help="the label source: FER-2013 (folder or fer2013.csv: 7 classes, one label per face) or FER+ "
                         "(Microsoft's FER2013Train/Valid/Test folders, or fer2013.csv + fer2013new.csv: 8 classes "
                         "with ten votes per face) (default: $FER_DATA or data/fer2013)")
    ap.add_argument("--arch", default=d.arch, choices=list_models())
    ap.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    ap.add_argument("--lr", type=float, default=d.lr, help="learning rate (peak rate for onecycle)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--momentum", type=float, default=d.momentum, help="for sgd / sgd_nesterov")
    ap.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment)
    ap.add_argument("--camera-augment", action=argparse.BooleanOptionalAction, default=d.camera_augment,
                    help="with --augment: also vary exposure (brightness, contrast, gamma), focus blur and sensor "
                         "noise per face, as real cameras do")
    ap.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    ap.add_argument("--target", default=d.target, choices=TARGET_MODES,
                    help="what each step aims at, with FER+ data (Barsoum et al. 2016): majority = the majority "
                         "label (FER-2013's label on FER-2013 data); probability = a label drawn from the ten votes "
                         "at every step; crossentropy = the vote distribution; multitarget = any emotion with "
                         ">= 30%% of the votes")
    ap.add_argument("--fer2013", default=d.fer2013, metavar="DATA",
                    help="with FER+ data: a FER-2013 copy (folder or fer2013.csv) whose own label of each training "
                         "face is blended into its FER+ target (faces are matched by pixels; the fer2013.csv + "
                         "fer2013new.csv pair needs no copy)")
    ap.add_argument("--fer2013-share", type=float, default=d.fer2013_share,
                    help="FER-2013's label's share of each target, with --fer2013")
    ap.add_argument("--val-fraction", type=float, default=d.val_fraction,
                    help="stratified slice of train used for validation when the data has no val split")
    ap.add_argument("--subset", type=int, default=d.subset, help="train on at most N images per class")
    ap.add_argument("--clean", action=argparse.BooleanOptionalAction, default=d.clean,
                    help="drop blank, duplicate and leaked training images")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--val-seed", type=int, default=d.val_seed,
                    help="draw the validation slice with this seed instead of --seed, so that networks trained "
                         "with different seeds for one ensemble are all validated on the same held-out images")
    ap.add_argument("--teacher", default=d.teacher, metavar="WEIGHTS",
                    help="distil from these weights (e.g. weights/accurate.safetensors): each target becomes "
                         "a blend of the label and the teacher's probabilities")
    ap.add_argument("--distill", type=float, default=d.distill, help="the teacher's share of each target")
    ap.add_argument("--init", default=d.init, metavar="WEIGHTS",
                    help="start from these weights (same architecture) instead of random ones, e.g. to anneal "
                         "a stopped run's best checkpoint with --schedule cosine and a small --lr")
    ap.add_argument("--patience", type=int, default=d.patience, metavar="EPOCHS",
                    help="early stopping: end the run once validation accuracy has not improved for this many "
                         "epochs (the best checkpoint is the one kept); default: train all --epochs")
    ap.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    ap.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", default=d.out, help="run folder (default: runs/<time>-<arch>-<optimizer>-lr<lr>)")
    args = vars(ap.parse_args(argv))
    run = args.pop("resume")
    if run is None:
        return TrainConfig(**args)
    changed = sorted("--" + k.replace("_", "-") for k, v in args.items() if v != getattr(d, k))
    if changed:
        ap.error(f"--resume takes the run's own settings; drop {', '.join(changed)}")
    return run


def main(argv: list[str] | None = None) -> int:
    """Also the entry point of every process under ``torchrun`` (see ``fer_core.training.distributed``)."""
    cfg = parse_args(argv)
    try:
        out = resume(cfg) if isinstance(cfg, str) else train(cfg)
    except (ValueError, TrainingError, distributed.RemoteFailure) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the run is marked cancelled and its last finished epoch is kept
        return 130
    finally:
        distributed.shutdown()
    if distributed.is_main_process():
        print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
