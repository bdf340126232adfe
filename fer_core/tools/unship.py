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
from fer_core.models.card import ModelCard
from fer_core.models.checkpoint import load_checkpoint, save_checkpoint
from fer_core.models.zoo import ModelConfig

PREFIX = "shipped-"


def member_names(configs: list[dict]) -> list[str]:
    """``shipped-<the run folder's name>``, numbered where two networks came from folders of one name."""
    names = [PREFIX + Path(c.get("out") or f"{c['arch']}-seed{c['seed']}").name for c in configs]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def slot_sources(slots: list[str], trained: list[str]) -> list[int]:
    """For each slot of a shipped file (its architecture), the index of the card's network that fills it.

    A card lists its networks in the order the runs were given to ship, the file holds them in slot
    order; ship fills slots by architecture, runs of one architecture in their given order (older files
    in the order of their letter code, e.g. fernet_lmmms), so the k-th slot of an architecture holds the
    k-th network of that architecture on the card.
    """
    pending: dict[str, list[int]] = {}
    for i, arch in enumerate(trained):
        pending.setdefault(arch, []).append(i)
    if sorted(slots) != sorted(trained):
        raise ValueError(f"the card lists {' + '.join(trained)} but the file holds {' + '.join(slots)}")
    return [pending[arch].pop(0) for arch in slots]


def unship(weights: Path, out_dir: Path) -> list[Path]:
    """Write one run folder per network of ``weights``; refuses to touch folders that exist."""
    card_path = weights.with_suffix(".json")
    raw = read_json(card_path)
    if raw.get("config") is None:
        raise ValueError(f"{card_path}: no model card beside {weights} (a file shipped by fer_core.runs.ship has one)")
    card = ModelCard.from_dict(raw)  # a CardError (a ValueError) names what is malformed
    configs, members = card.config or [], card.members
    if members is None:
        raise ValueError(f"{card_path} does not record what each network's training cost (cards written by "
                         "fer_core.runs.ship since the 'members' field was added do)")
    model, cfg = load_checkpoint(weights)
    networks = list(model.members) if cfg.is_ensemble else [model]
    if not len(networks) == len(configs) == len(members):
        raise ValueError(f"{card_path} describes {len(configs)} networks, {weights} holds {len(networks)}")
    order = slot_sources(cfg.members or [cfg.arch], [c["arch"] for c in configs])
    names = member_names(configs)
    clashes = [n for n in names if (out_dir / n).exists()]
    if clashes:
        verb = "exists" if len(clashes) == 1 else "exist"
        raise ValueError(f"{', '.join(str(out_dir / n) for n in clashes)} already {verb}; nothing was written")
    data = card.data.to_dict() if card.data is not None else None
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
            "train": train, "model": mcfg.to_dict(), "data": data, "teacher": None, "init": None,
            "rebuilt_from": f"{weights} ({card.stored_as})"})
        # what fer_core.runs.ship counts for a folder with no history
        write_json(tmp / "summary.json", members[i].to_dict())
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
