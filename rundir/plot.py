"""A run's learning curves as a picture: `history.png` beside `history.csv`.

Four panels: held-out and training top-1, then held-out and training loss (cross-entropy of the
main logits), each against the epoch and against the hours of training (the sum of the epochs'
times, training plus scoring); a run with averaged weights (--ema_decay) or test-time
augmentation (--tta) has those held-out curves too, and one with a validation split
(--val_fraction) its validation curve. The chief redraws it after every epoch's
checkpoint; to draw it for any run directory (or a copied history.csv):

    python -m rundir.plot runs/cifar10-minigooglenet [--out=curves.png]

Drawn with Pillow, which the project already needs, so the picture costs no extra dependency.
"""
import argparse
import csv
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from rundir.layout import HISTORY_FILE, PLOT_FILE

PANEL = (560, 330)  # one panel's size in pixels
MARGIN = dict(left=70, right=20, top=40, bottom=50)
# Blue, orange, green and red, as TensorBoard's first four.
HELD_OUT, TRAIN, AVERAGED, WITH_TTA = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)
VALIDATION = (148, 103, 189)  # TensorBoard's fifth
COLOURS = {"held-out": HELD_OUT, "train": TRAIN, "averaged": AVERAGED, "with TTA": WITH_TTA,
           "validation": VALIDATION}
GRID, AXIS, TEXT = (225, 225, 225), (60, 60, 60), (20, 20, 20)

Point = Tuple[float, float]


def read_history(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(text: Optional[str]) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def curves(rows: Sequence[Dict[str, str]]) -> Dict[str, Dict[str, List[Point]]]:
    """{panel: {series: [(x, y), ...]}} for the four panels; a row without a held-out score
    (an epoch that was not scored) gives no held-out point. The averaged weights' held-out
    scores are the series "averaged", those with test-time augmentation "with TTA", and the
    validation split's (--val_fraction) "validation", when the rows hold any."""
    hours, elapsed = [], 0.0
    for row in rows:
        elapsed += _number(row.get("epoch_seconds")) or 0.0
        hours.append(elapsed / 3600)
    epochs = [int(row["epoch"]) for row in rows]
    series = {"held-out": "heldout_top1", "train": "train_top1"}
    losses = {"held-out": "heldout_loss", "train": "train_cross_entropy"}
    if any(_number(row.get("heldout_ema_top1")) is not None for row in rows):
        series["averaged"], losses["averaged"] = "heldout_ema_top1", "heldout_ema_loss"
    if any(_number(row.get("heldout_tta_top1")) is not None for row in rows):
        series["with TTA"], losses["with TTA"] = "heldout_tta_top1", "heldout_tta_loss"
    if any(_number(row.get("val_top1")) is not None for row in rows):
        series["validation"], losses["validation"] = "val_top1", "val_loss"

    def points(xs, column, scale=1.0):
        values = [_number(row.get(column)) for row in rows]
        return [(x, v * scale) for x, v in zip(xs, values) if v is not None]
    panels = {}
    for axis, xs in (("epoch", epochs), ("hours", hours)):
        panels[f"top-1 (%) by {axis}"] = {name: points(xs, column, 100.0)
                                           for name, column in series.items()}
        panels[f"loss by {axis}"] = {name: points(xs, column) for name, column in losses.items()}
    return panels


def _nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering the
    range."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _label(value: float) -> str:
    return f"{value:.10g}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def draw_panel(draw: ImageDraw.ImageDraw, origin: Point, title: str,
               series: Dict[str, List[Point]], font) -> Dict[str, List[Point]]:
    """One panel at `origin`; returns each series' points in image pixels."""
    ox, oy = origin
    left, top = ox + MARGIN["left"], oy + MARGIN["top"]
    right, bottom = ox + PANEL[0] - MARGIN["right"], oy + PANEL[1] - MARGIN["bottom"]
    every = [p for pts in series.values() for p in pts]
    xs = [x for x, _ in every] or [0.0, 1.0]
    ys = [y for _, y in every] or [0.0, 1.0]
    x_ticks = _nice_ticks(min(0.0, min(xs)), max(xs))
    y_ticks = _nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def to_pixel(x, y):
        return (left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (y - y0) / (y1 - y0) * (bottom - top))
    for x in x_ticks:
        px = to_pixel(x, y0)[0]
        draw.line([(px, top), (px, bottom)], fill=GRID)
        draw.text((px, bottom + 6), _label(x), fill=TEXT, font=font, anchor="mt")
    for y in y_ticks:
        py = to_pixel(x0, y)[1]
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((left - 6, py), _label(y), fill=TEXT, font=font, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    draw.text(((left + right) / 2, oy + 12), title, fill=TEXT, font=font, anchor="mt")
    drawn = {}
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[name]
        pixels = [to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        legend_y = top + 10 + 18 * i
        draw.line([(right - 110, legend_y), (right - 90, legend_y)], fill=colour, width=3)
        draw.text((right - 84, legend_y), name, fill=TEXT, font=font, anchor="lm")
        drawn[name] = pixels
    return drawn


def plot_history(rows: Sequence[Dict[str, str]], out_path: str,
                 title: str = "") -> Dict[str, Dict[str, List[Point]]]:
    """Draws the four panels of `rows` (history.csv's) to `out_path` (PNG, written atomically);
    returns {panel: {series: pixel points}}."""
    font = ImageFont.load_default(size=13)
    header = 30 if title else 0
    image = Image.new("RGB", (2 * PANEL[0], 2 * PANEL[1] + header), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((image.width / 2, 8), title, fill=TEXT, font=font, anchor="mt")
    drawn = {}
    order = ["top-1 (%) by epoch", "top-1 (%) by hours", "loss by epoch", "loss by hours"]
    panels = curves(rows)
    for i, name in enumerate(order):
        origin = ((i % 2) * PANEL[0], header + (i // 2) * PANEL[1])
        drawn[name] = draw_panel(draw, origin, name, panels[name], font)
    tmp = out_path + ".tmp"
    image.save(tmp, format="PNG")
    os.replace(tmp, out_path)
    return drawn


def write_run_plot(run_dir: str, out_path: Optional[str] = None) -> Optional[str]:
    """Redraws `run_dir`'s history.png from its history.csv; None when there is no history."""
    history = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.exists(history):
        return None
    rows = read_history(history)
    if not rows:
        return None
    out_path = out_path or os.path.join(run_dir, PLOT_FILE)
    plot_history(rows, out_path, title=os.path.basename(os.path.normpath(run_dir)))
    return out_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (or any folder with a history.csv)")
    parser.add_argument("--out", help=f"the PNG to write (default: RUN_DIR/{PLOT_FILE})")
    args = parser.parse_args(argv)
    try:
        path = write_run_plot(args.run_dir, args.out)
    except (OSError, KeyError, ValueError) as error:
        print(f"Error: cannot plot {args.run_dir!r}: {error}", file=sys.stderr)
        return 1
    if path is None:
        print(f"Error: {os.path.join(args.run_dir, HISTORY_FILE)!r} does not exist or has no "
              f"rows yet", file=sys.stderr)
        return 1
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
