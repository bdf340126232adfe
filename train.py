"""Train a FER-2013 model: ``python train.py --help``. The flags live in ``fer_core.training.cli``."""

import sys

from fer_core.training.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
