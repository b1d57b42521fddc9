"""What every benchmark script shares: timing, the machine description and
writing ``benchmarks/results/<name>-<date>.{json,md}``."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys

import numpy as np

from mlpgx._timing import best_time  # noqa: F401  (shared with `mlpgx bench`)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine_info(**extra) -> dict:
    """Host, CPU, versions (and the kernel build), plus ``extra``."""
    import mlpgx
    import mlpgx._ext

    info = dict(host=socket.gethostname(), platform=platform.platform(),
                processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                simd=mlpgx._ext.simd + ("+avx512" if mlpgx._ext.solver.use_avx512() else ""),
                python=sys.version.split()[0], numpy=np.__version__,
                mlpgx=mlpgx.__version__)
    info.update(extra)
    return info


def today() -> str:
    return datetime.date.today().isoformat()


def write_results(name: str, title: str, payload: dict, sections, *, quick=False,
                  out_dir=RESULTS) -> str:
    """Write ``<out_dir>/<name>[-quick]-<date>.json`` (``payload``) and
    ``.md`` (``# title``, the machine line of ``payload["machine"]`` and
    ``sections``, a list of ``(heading or None, markdown text)``); returns the
    path without extension."""
    stamp = today()
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"{name}-{'quick-' if quick else ''}{stamp}")
    with open(base + ".json", "w") as fh:
        json.dump(payload, fh, indent=1)
    with open(base + ".md", "w") as fh:
        fh.write(f"# {title}, {stamp}\n\n")
        machine = payload.get("machine", {})
        fh.write("Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()) + "\n\n")
        for heading, text in sections:
            if heading:
                fh.write(f"## {heading}\n\n")
            fh.write(text.rstrip("\n") + "\n\n")
    print(f"\nwrote {base}.json and {base}.md")
    return base


def arg_parser(doc: str, quick_help=None) -> argparse.ArgumentParser:
    """The options every result-writing script shares: ``--out`` (the results
    folder) and, when ``quick_help`` is given, ``--quick``; the description is
    the first line of ``doc``."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    if quick_help is not None:
        ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", default=RESULTS, help="results folder (default %(default)s)")
    return ap


def save_figure(fig, path: str) -> None:
    """Lay out, write (110 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
