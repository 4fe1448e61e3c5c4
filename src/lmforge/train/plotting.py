"""Pure plotting: a metric curve to a PNG a person can read at a glance.

Usage::

    from lmforge.train.plotting import plot_curve
    plot_curve([1, 2, 3], [2.0, 1.5, 1.2], "training loss", "loss", "out/training_loss.png")

The raw values are drawn faint and a TensorBoard-style debiased exponential moving average bold, so
noisy per-step losses still show their trend. Figures are built with `matplotlib.figure.Figure` and
rendered by the Agg canvas: no pyplot, no global state, no display needed (servers, threads). Files are
written atomically (temporary file + `os.replace`), so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


def ema_smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average, as TensorBoard's smoothing slider computes it.

    ``ema_t = weight * ema_{t-1} + (1 - weight) * x_t`` with ``ema_{-1} = 0``, divided by
    ``1 - weight ** (t + 1)``. The division removes the pull towards the zero start, so the first
    smoothed value equals the first raw value instead of ``(1 - weight) * x_0``.

    Args:
        values: The raw series (finite floats).
        weight: Smoothing in [0, 1); 0 returns the values unchanged.

    Returns:
        The smoothed series, same length.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed, ema, debias = [], 0.0, 1.0
    for value in values:
        ema = weight * ema + (1.0 - weight) * value
        debias *= weight
        smoothed.append(ema / (1.0 - debias))
    return smoothed


def auto_smoothing(n_points: int) -> float:
    """A smoothing weight whose averaging window (~1 / (1 - weight)) is about 5% of the points.

    A fixed weight is wrong at one end or the other: 0.6 leaves 10k noisy points unreadable, 0.99
    flattens a 20-point curve. A wider window makes the smoothed curve lag visibly behind a falling
    loss. Up to 20 points nothing is smoothed; the weight is capped at 0.99 (a 100-point window).
    """
    if n_points <= 20:
        return 0.0
    return min(0.99, 1.0 - 20.0 / n_points)


def plot_curve(
    steps: Sequence[float],
    values: Sequence[float],
    title: str,
    ylabel: str,
    out_path: str | os.PathLike,
    smoothing: float | None = None,
) -> Path:
    """Write one metric curve as a PNG: faint raw curve, bold smoothed curve, labels, legend, grid.

    Non-finite values (a diverged loss) cannot be drawn; they are left out and their count is noted on
    the figure rather than silently dropped.

    Args:
        steps: x values (optimizer steps).
        values: y values, same length as `steps`.
        title: Figure title.
        ylabel: y-axis label (the x axis is "step").
        out_path: Where the PNG goes; parent directories are created.
        smoothing: EMA weight in [0, 1); None picks one from the number of points (`auto_smoothing`).

    Returns:
        `out_path` as a Path.
    """
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import, plots are rare

    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} != {len(values)}")
    points = [(float(s), float(v)) for s, v in zip(steps, values) if math.isfinite(float(v))]
    dropped = len(values) - len(points)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    weight = auto_smoothing(len(ys)) if smoothing is None else smoothing

    fig = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    few = len(ys) <= 50  # markers make single points and short eval series visible
    marker = "o" if few else None
    if weight > 0.0 and len(ys) > 1:
        ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=1.0, marker=marker, markersize=3, label="raw")
        smooth = ema_smooth(ys, weight)
        ax.plot(
            xs, smooth, color="tab:blue", linewidth=2.2, label=f"smoothed (EMA {weight:.2f}), last {smooth[-1]:.4g}"
        )
    elif ys:
        ax.plot(
            xs, ys, color="tab:blue", linewidth=2.0, marker=marker, markersize=5, label=f"{ylabel}, last {ys[-1]:.4g}"
        )
    else:
        ax.text(0.5, 0.5, "no finite values to plot", transform=ax.transAxes, ha="center", va="center")
    if dropped:
        ax.text(
            0.99,
            0.98,
            f"{dropped} non-finite value(s) omitted",
            transform=ax.transAxes,
            ha="right",
            va="top",
            color="tab:red",
        )
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ys:
        ax.legend(loc="upper right" if not dropped else "center right")

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return out
