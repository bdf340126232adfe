"""Console-script entry points that span layers (``pyproject.toml`` lists every command).

``fer-bench`` times the architectures (``fer_core.evaluation.bench``) and, with
``--pipeline``, the whole recognition pipeline (``fer_core.recognition.pipeline_bench``): one
command for users, two layers underneath, so the dispatch lives above both.
"""

from __future__ import annotations

import sys


def bench(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--pipeline" in args:
        from fer_core.recognition.pipeline_bench import main

        return main([a for a in args if a != "--pipeline"])
    from fer_core.evaluation.bench import main

    return main(args)


if __name__ == "__main__":
    sys.exit(bench())
