"""Turn a shipped model back into run folders, one per trained network, so that new runs can be
ranked against it (``fer_core.tools.choose_ensemble``) and shipped with it (``fer_core.runs.ship``).

The runs behind a shipped file do not survive a fresh checkout, but the file and its card hold
everything ranking and shipping need: each network's weights (as the file stores them), its
training config, the data hashes and what its training cost. Ranking the rebuilt folders gives
exactly the card's validation figures, because they hold exactly the shipped weights.

    python -m fer_core.tools.unship [WEIGHTS] --out-dir runs      # default: the shipped accurate model
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from fer_core.common.atomic import read_json, write_json
from fer_core.models.active import accurate_weights
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ENSEMBLES, ModelConfig, slot_order

PREFIX = "shipped-"


def member_names(configs: list[dict]) -> list[str]:
    """``shipped-<the run folder's name>``, numbered where two networks came from folders of one name."""
    names = [PREFIX + Path(c.get("out") or f"{c['arch']}-seed{c['seed']}").name for c in configs]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def unship(weights: Path, out_dir: Path) -> list[Path]:
    """Write one run folder per network of ``weights``; refuses to touch folders that exist."""
    card_path = weights.with_suffix(".json")
    card = read_json(card_path)
    if "config" not in card:
        raise ValueError(f"{card_path}: no model card beside {weights} (a file shipped by fer_core.runs.ship has one)")
    configs, members = card["config"], card.get("members")
    if members is None:
        raise ValueError(f"{card_path} does not record what each network's training cost (cards written by "
                         "fer_core.runs.ship since the 'members' field was added do)")
    model, cfg = load_checkpoint(weights)
    ensemble = cfg.arch in ENSEMBLES
    networks = list(model.members) if ensemble else [model]
    if not len(networks) == len(configs) == len(members):
        raise ValueError(f"{card_path} describes {len(configs)} networks, {weights} holds {len(networks)}")
    order = slot_order(cfg.arch, [c["arch"] for c in configs]) if ensemble else [0]  # how ship filled the slots
    names = member_names(configs)
    clashes = [n for n in names if (out_dir / n).exists()]
    if clashes:
        verb = "exists" if len(clashes) == 1 else "exist"
        raise ValueError(f"{', '.join(str(out_dir / n) for n in clashes)} already {verb}; nothing was written")
    written = []
    for network, i in zip(networks, order, strict=True):
        train, mcfg = configs[i], ModelConfig(configs[i]["arch"])
        out = out_dir / names[i]
        tmp = out_dir / f".{names[i]}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_checkpoint(network, mcfg, tmp / "model.safetensors")
        write_json(tmp / "config.json", {
            # train: as it was trained (provenance); init/teacher None: there is no earlier run folder to count
            "train": train, "model": mcfg.to_dict(), "data": card["data"], "teacher": None, "init": None,
            "rebuilt_from": f"{weights} ({card.get('storage', 'float16')})"})
        write_json(tmp / "summary.json", members[i])  # what fer_core.runs.ship counts for a folder with no history
        tmp.rename(out)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_core.tools.unship", description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="?", type=Path, help="a shipped file (default: the accurate model)")
    ap.add_argument("--out-dir", type=Path, default=Path("runs"))
    args = ap.parse_args(argv)
    try:
        for out in unship(args.weights or accurate_weights(), args.out_dir):
            print(out)
    except (OSError, ValueError) as exc:  # includes CheckpointError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
