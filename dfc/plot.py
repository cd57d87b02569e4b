"""Figures for reports: samples over a target density, image grids, line plots.

Figures are built as `matplotlib.figure.Figure` objects (not through pyplot's global figure
list), so they are freed when dropped and never need `plt.close`. Save them with
`dfc.io.atomic_save_figure`. The Agg backend is selected on import: there is no screen.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: there is no screen

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dfc.errors import DataError  # noqa: E402

__all__ = ["scatter_over_density", "image_grid", "line_plot"]

Bounds = tuple[tuple[float, float], tuple[float, float]]

_GRID = 300  # density grid resolution per axis
_LOG_RANGE = 12.0  # log-density shown down to max - 12
_MAX_POINTS = 20_000
_DENSITY_CMAP = "Blues"  # sequential, white at the floor, dark at the modes
_DENSITY_ALPHA = 0.85
_DOT_COLOR = "#d62728"


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_samples(samples: Any) -> np.ndarray:
    try:
        arr = _to_numpy(samples)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"scatter_over_density: `samples` is not a numeric array ({exc}); pass an (N, D) "
            "array."
        ) from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise DataError(
            f"scatter_over_density: `samples` has shape {arr.shape}, but it must be (N, D); "
            "flatten each sample to a vector first."
        )
    return arr


def _check_interval(iv: Any, axis: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in iv)
    except (TypeError, ValueError):
        raise DataError(
            f"scatter_over_density: the {axis} bounds {iv!r} are not a (low, high) pair; pass "
            "bounds as ((xlo, xhi), (ylo, yhi))."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(
            f"scatter_over_density: the {axis} bounds ({lo}, {hi}) must be finite with low < "
            "high; fix the plot bounds."
        )
    return lo, hi


def _auto_interval(col: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile range of `col`, padded by 10% on each side (never empty)."""
    if col.size == 0:
        return -3.0, 3.0
    lo, hi = np.percentile(col, [1.0, 99.0])
    width = hi - lo
    if not width > 0.0:
        width = max(abs(lo), 1.0)
        return float(lo - 0.5 * width), float(hi + 0.5 * width)
    return float(lo - 0.1 * width), float(hi + 0.1 * width)


def _eval_log_density(log_density: Callable, pts: np.ndarray) -> np.ndarray | None:
    """Evaluate `log_density` on `pts` (M, d); returns (M,) floats with non-finite values
    set to -inf, or None if nothing finite came back."""
    out = log_density(pts)
    try:
        vals = _to_numpy(out).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(
            "scatter_over_density: `log_density` did not return numbers; it must map an (M, "
            f"{pts.shape[1]}) float64 array to an (M,) array of log densities."
        ) from None
    if vals.shape[0] != pts.shape[0]:
        raise DataError(
            f"scatter_over_density: `log_density` returned {vals.shape[0]} values for "
            f"{pts.shape[0]} points; it must return one log density per row."
        )
    vals = np.where(np.isfinite(vals), vals, -np.inf)
    if not np.isfinite(vals).any():
        return None
    return vals


def _subsample(arr: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    if arr.shape[0] <= max_points:
        return arr
    idx = np.random.default_rng(seed).choice(arr.shape[0], size=max_points, replace=False)
    return arr[np.sort(idx)]


def scatter_over_density(
    samples: Any,
    log_density: Callable[[np.ndarray], Any] | None = None,
    bounds: Bounds | None = None,
    title: str = "",
    *,
    max_points: int = _MAX_POINTS,
    seed: int = 0,
    size: float = 6.0,
) -> Figure:
    """Samples (first two coordinates) as small translucent dots over the target density.

    `log_density` maps an (M, 2) float64 array to (M,) log densities; it is drawn on a
    300×300 grid over `bounds`, clipped below at its maximum − 12. `bounds` defaults to the
    samples' 1st–99th percentile box padded by 10% and widened to a square. At most
    `max_points` samples are drawn (a fixed random subset); rows with NaN/inf are left out
    and counted in a note on the plot.

    For 1-D samples the figure is a histogram with exp(log density) as a curve, and
    `log_density` receives an (M, 1) array.
    """
    arr = _as_samples(samples)
    finite = np.isfinite(arr).all(axis=1)
    n_bad = int((~finite).sum())
    arr = arr[finite]
    if arr.shape[1] == 1:
        return _hist_over_density(arr[:, 0], log_density, bounds, title, n_bad, size)
    pts2 = arr[:, :2]

    if bounds is None:
        (xlo, xhi), (ylo, yhi) = _auto_interval(pts2[:, 0]), _auto_interval(pts2[:, 1])
        # Square box (equal aspect in a square figure): widen the narrower side.
        half = 0.5 * max(xhi - xlo, yhi - ylo)
        cx, cy = 0.5 * (xlo + xhi), 0.5 * (ylo + yhi)
        (xlo, xhi), (ylo, yhi) = (cx - half, cx + half), (cy - half, cy + half)
    else:
        try:
            bx, by = bounds
        except (TypeError, ValueError):
            raise DataError(
                f"scatter_over_density: bounds {bounds!r} must be ((xlo, xhi), (ylo, yhi)); "
                "fix the plot bounds or pass None."
            ) from None
        (xlo, xhi), (ylo, yhi) = _check_interval(bx, "x"), _check_interval(by, "y")

    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()

    if log_density is not None:
        gx = np.linspace(xlo, xhi, _GRID)
        gy = np.linspace(ylo, yhi, _GRID)
        mx, my = np.meshgrid(gx, gy)  # rows follow y
        grid = np.column_stack([mx.ravel(), my.ravel()])
        vals = _eval_log_density(log_density, grid)
        if vals is not None:
            top = float(vals.max())
            img = np.maximum(vals, top - _LOG_RANGE).reshape(_GRID, _GRID)
            ax.imshow(
                img, origin="lower", extent=(xlo, xhi, ylo, yhi), cmap=_DENSITY_CMAP,
                alpha=_DENSITY_ALPHA, interpolation="bilinear", aspect="auto",
                vmin=top - _LOG_RANGE, vmax=top + 0.25 * _LOG_RANGE, zorder=0,
            )

    shown = _subsample(pts2, max_points, seed)
    if shown.shape[0]:
        n = shown.shape[0]
        alpha = float(np.clip(2000.0 / n, 0.15, 0.8))
        dot = float(np.clip(8000.0 / n, 1.0, 6.0))
        ax.scatter(
            shown[:, 0], shown[:, 1], s=dot, c=_DOT_COLOR, alpha=alpha, linewidths=0,
            rasterized=True, zorder=2,
        )

    notes = []
    if shown.shape[0] < pts2.shape[0]:
        notes.append(f"showing {shown.shape[0]:,} of {pts2.shape[0]:,} samples")
    if n_bad:
        notes.append(f"{n_bad:,} non-finite samples left out")
    if notes:
        ax.text(
            0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=8, va="bottom",
            ha="left", color="0.2", bbox=dict(facecolor="white", alpha=0.7, linewidth=0),
        )

    ax.set_xlim(xlo, xhi)
    ax.set_ylim(ylo, yhi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return fig


def _hist_over_density(
    x: np.ndarray,
    log_density: Callable | None,
    bounds: Any,
    title: str,
    n_bad: int,
    size: float,
) -> Figure:
    if bounds is None:
        lo, hi = _auto_interval(x)
    else:
        iv = bounds[0] if len(bounds) and np.ndim(bounds[0]) == 1 else bounds
        lo, hi = _check_interval(iv, "x")
    fig = Figure(figsize=(size, 0.7 * size), layout="constrained")
    ax = fig.add_subplot()
    if x.size:
        ax.hist(x, bins=80, range=(lo, hi), density=True, color=_DOT_COLOR, alpha=0.45,
                label="samples")
    if log_density is not None:
        gx = np.linspace(lo, hi, 1000)
        vals = _eval_log_density(log_density, gx[:, None])
        if vals is not None:
            ax.plot(gx, np.exp(vals), color="#1f3b73", linewidth=1.5, label="target density")
    if n_bad:
        ax.text(0.01, 0.98, f"{n_bad:,} non-finite samples left out", transform=ax.transAxes,
                fontsize=8, va="top", ha="left", color="0.2")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("density")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return fig


def image_grid(
    images: Any, nrow: int = 8, title: str = "", *, pad: int = 1, cell_inches: float = 0.6
) -> Figure:
    """Grey-scale grid of images in [-1, 1] (-1 black, 1 white), `nrow` images per row.

    Accepts (N, H, W), (N, 1, H, W), or flattened square images (N, H*W).
    """
    try:
        arr = _to_numpy(images)
    except (TypeError, ValueError) as exc:
        raise DataError(f"image_grid: `images` is not a numeric array ({exc}).") from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1]:
            raise DataError(
                f"image_grid: `images` has shape {arr.shape}; flattened images must have a "
                "square number of pixels, otherwise pass them as (N, H, W)."
            )
        arr = arr.reshape(arr.shape[0], side, side)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise DataError(
            f"image_grid: `images` has shape {arr.shape}, but it must be (N, H, W) with N >= 1; "
            "reshape the images first."
        )
    if int(nrow) < 1:
        raise DataError(f"image_grid: nrow={nrow} must be at least 1; pass a positive count.")
    n, h, w = arr.shape
    ncol = min(int(nrow), n)
    rows = math.ceil(n / ncol)
    arr = np.clip(np.nan_to_num(arr, nan=-1.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    canvas = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad), 1.0)
    for i in range(n):
        r, c = divmod(i, ncol)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = arr[i]
    width = max(2.0, canvas.shape[1] * cell_inches / max(h, w))
    height = max(2.0, width * canvas.shape[0] / canvas.shape[1])
    fig = Figure(figsize=(width, height + (0.35 if title else 0.0)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def line_plot(
    xs: Sequence[float] | Mapping[str, Sequence[float]] | None,
    series: Mapping[str, Sequence[float | None]],
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """One line per entry of `series` (name → y values) against `xs`.

    `xs` is shared by all series, or a dict giving each series its own x values, or None for
    0, 1, 2, ... . None/NaN values leave gaps; on a log axis non-positive values are left out.
    Lines with at most 40 points get markers.
    """
    if not series:
        raise DataError("line_plot: `series` is empty; pass at least one name → values entry.")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for name, ys in series.items():
        y = np.array([np.nan if v is None else v for v in _to_numpy_list(ys)], dtype=np.float64)
        if isinstance(xs, Mapping):
            if name not in xs:
                raise DataError(
                    f"line_plot: `xs` has no x values for series {name!r}; add them or pass one "
                    "shared list of x values."
                )
            x = np.asarray(_to_numpy(xs[name]), dtype=np.float64).reshape(-1)
        elif xs is None:
            x = np.arange(y.shape[0], dtype=np.float64)
        else:
            x = np.asarray(_to_numpy(xs), dtype=np.float64).reshape(-1)
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"line_plot: series {name!r} has {y.shape[0]} values but there are "
                f"{x.shape[0]} x values; pass one y value per x value."
            )
        if logx:
            y = np.where(x > 0, y, np.nan)
        if logy:
            y = np.where(y > 0, y, np.nan)
        ax.plot(x, y, marker="o" if y.shape[0] <= 40 else None, markersize=3.5, linewidth=1.4,
                label=str(name))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def _to_numpy_list(ys: Any) -> list:
    if hasattr(ys, "detach") and hasattr(ys, "cpu"):
        ys = ys.detach().cpu().numpy()
    if isinstance(ys, np.ndarray):
        return ys.reshape(-1).tolist()
    return list(ys)
