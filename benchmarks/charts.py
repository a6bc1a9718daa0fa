"""PNG charts for the benchmark commands (matplotlib, drawn off screen).

``ratio_chart`` draws run.py's targets: each ratio as a bar, the per-round spread as a line
across it and the goal as a mark. ``size_chart`` draws sizes.py's sweep: throughput against
session size per variant, and the bytes each write sends. Without matplotlib both say so and
draw nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return None
    return plt


def ratio_chart(evaluated: Sequence[Any], path: Path, note: str) -> bool:
    """One horizontal bar per target: the ratio of the median runs, whiskers from the lowest to
    the highest per-round ratio, a black mark at the goal; green met, red missed, grey info.

    :param evaluated: run.py's ``TargetResult`` list.
    :param path: the PNG to write.
    :param note: a line under the title (how the numbers were taken).
    :returns: whether a chart was written.
    """
    plt = _pyplot()
    if plt is None or not evaluated:
        return False
    labels = [t.target.label for t in evaluated][::-1]
    ratios = [t.ratio for t in evaluated][::-1]
    colours = [{"met": "#3a923a", "missed": "#c0392b"}.get(t.verdict, "#9e9e9e") for t in evaluated][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.6))
    ax.barh(labels, ratios, color=colours)
    for i, t in enumerate(evaluated[::-1]):
        if t.paired:
            ax.plot([min(t.paired), max(t.paired)], [i, i], color="black", linewidth=1)
        if t.target.goal is not None:
            ax.plot([t.target.goal], [i], marker="|", color="black", markersize=18, markeredgewidth=2)
        right = max([t.ratio, *(t.paired or [])])
        ax.text(right + 0.03, i, f"{t.ratio:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xlabel("throughput ratio (req/s of the first variant / the second)")
    ax.set_title("pgsession-wsgi against the floor, Redis and no session\n" + note, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def size_chart(
    throughput: Mapping[str, Mapping[str, Mapping[int, float]]],
    sent: Mapping[str, Mapping[int, float]],
    path: Path,
    note: str,
) -> bool:
    """Throughput of /read and /write, and bytes sent per write, against the session size.

    :param throughput: route -> variant -> session size -> req/s.
    :param sent: variant -> session size -> bytes sent to the store per /write request.
    :param path: the PNG to write.
    :param note: a line under the title.
    :returns: whether a chart was written.
    """
    plt = _pyplot()
    if plt is None or not throughput:
        return False
    routes = list(throughput)
    fig, axes = plt.subplots(1, len(routes) + 1, figsize=(5 * (len(routes) + 1), 4.2))
    for ax, route in zip(axes, routes):
        for variant, points in throughput[route].items():
            sizes = sorted(points)
            ax.plot(sizes, [points[n] for n in sizes], marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_xlabel("session size (bytes)")
        ax.set_ylabel("req/s")
        ax.set_title(f"/{route}")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    ax = axes[-1]
    for variant, points in sent.items():
        sizes = sorted(points)
        ax.plot(sizes, [points[n] for n in sizes], marker="o", label=variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("session size (bytes)")
    ax.set_ylabel("bytes sent to the store per /write")
    ax.set_title("bytes per write")
    ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Cost against session size\n" + note, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
