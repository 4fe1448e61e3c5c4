"""`lmforge compare RUN_DIR...`: several runs side by side: curves overlaid, final and best figures, config diff.

    lmforge compare saves/lr-1e-4 saves/lr-3e-4 --plot compare.png --html compare.html
    lmforge compare saves/* --metric loss --metric eval/shift/exact_match --x tokens

Reads each run's `trainer_log.jsonl` (every logged metric, by step), `all_results.json` (wall time) and
`lmforge_config.yaml` (the keys `lmforge train` ran with). Curves: each metric in its own panel, the raw points
faint and an exponential moving average over them (TensorBoard's smoothing, `--smooth`, 0 = none) drawn over them,
against optimizer step, tokens seen (`throughput/tokens_total`) or wall time (`elapsed_s`). The table: per run and
metric the final and the best value (lowest for losses, highest for the rest), mean tokens/s, peak memory (GiB: the GPU allocator's peak where there is one,
else the process's peak resident set) and wall time. The
config diff: every key whose value is not the same in all runs (a key missing from a run counts as its default,
shown as "-").
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.errors import ConfigError

CONFIG_FILE = "lmforge_config.yaml"
LOG_FILE = "trainer_log.jsonl"
X_KEYS = {"step": "step", "tokens": "throughput/tokens_total", "time": "elapsed_s"}


@dataclass
class Run:
    path: Path
    name: str
    rows: list[dict]
    config: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def series(self, metric: str, x: str) -> list[tuple[float, float]]:
        """(x, value) for every logged row holding the metric; x carried forward from the last row that had it."""
        points, last_x = [], None
        for row in self.rows:
            if X_KEYS[x] in row:
                last_x = row[X_KEYS[x]]
            value = row.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and last_x is not None:
                points.append((float(last_x), float(value)))
        return points


    def peak_memory_gib(self) -> float | None:
        """The highest peak the log recorded: the device allocator's on GPU runs, else the process's resident set."""
        for key in ("peak_device_gib", "peak_rss_gib"):
            values = [r[key] for r in self.rows if isinstance(r.get(key), (int, float))]
            if values:
                return max(values)
        return None


def load_run(path: Path) -> Run:
    log = path / LOG_FILE
    if not log.exists():
        raise ConfigError(f"{path}: no {LOG_FILE}; is it the output_dir of an lmforge train run?")
    rows = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise ConfigError(f"{log}: line {number} is not JSON") from None
    config = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8")) if (path / CONFIG_FILE).exists() else {}
    results = json.loads((path / "all_results.json").read_text()) if (path / "all_results.json").exists() else {}
    return Run(path, path.name, rows, config or {}, results)


def default_metrics(runs: list[Run]) -> list[str]:
    """loss, eval_loss and every evaluator metric (eval/...) that any run logged, in that order."""
    seen = {key for run in runs for row in run.rows for key in row}
    evaluators = sorted(key for key in seen if key.startswith("eval/"))
    return [key for key in ("loss", "eval_loss") if key in seen] + evaluators


def lower_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1]
    return "loss" in name or "perplexity" in name


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average."""
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight ** count) if weight else value)
    return out


def summary(runs: list[Run], metrics: list[str]) -> list[dict]:
    table = []
    for run in runs:
        row = {"run": run.name}
        for metric in metrics:
            values = [v for _, v in run.series(metric, "step") if math.isfinite(v)]
            row[f"{metric} final"] = values[-1] if values else None
            row[f"{metric} best"] = (min(values) if lower_is_better(metric) else max(values)) if values else None
        speeds = [r["tokens_per_s"] for r in run.rows if isinstance(r.get("tokens_per_s"), (int, float))]
        row["tokens/s"] = sum(speeds) / len(speeds) if speeds else None
        row["peak GiB"] = run.peak_memory_gib()
        row["wall s"] = run.results.get("train_runtime")
        table.append(row)
    return table


def config_diff(runs: list[Run]) -> dict[str, list]:
    """{key: [value per run]} for the keys whose values differ ("output_dir" and the like left out)."""
    keys = sorted({key for run in runs for key in run.config} - {"output_dir", "logging_dir", "run_name"})
    diff = {}
    for key in keys:
        values = [run.config.get(key, "-") for run in runs]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for v in values):
            diff[key] = values
    return diff


def plot(runs: list[Run], metrics: list[str], x: str, weight: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4 * rows), squeeze=False)
    for panel, metric in zip(axes.flat, metrics):
        for index, run in enumerate(runs):
            points = run.series(metric, x)
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            colour = f"C{index % 10}"
            if weight and len(points) > 2:
                panel.plot(xs, ys, color=colour, alpha=0.25, linewidth=1)
                panel.plot(xs, smooth(ys, weight), color=colour, linewidth=2, label=run.name)
            else:
                panel.plot(xs, ys, color=colour, linewidth=2, marker="o", markersize=3, label=run.name)
        panel.set_title(metric)
        panel.set_xlabel({"step": "step", "tokens": "tokens", "time": "seconds"}[x])
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    for panel in list(axes.flat)[len(metrics):]:
        panel.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_table(table: list[dict]) -> str:
    columns = list(table[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_html(path: Path, table: list[dict], diff: dict, runs: list[Run], image: Path | None) -> None:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in table[0]) + "</tr>"
                   for r in table)
    diff_rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in vs)
                        + "</tr>" for k, vs in diff.items())
    names = "".join(f"<th>{html.escape(run.name)}</th>" for run in runs)
    picture = ""
    if image is not None:
        picture = f'<img alt="curves" src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}">'
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>lmforge compare</title><style>
body {{ font-family: sans-serif; margin: 2em; }} td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} img {{ max-width: 100%; }}</style></head><body>
<h1>lmforge compare</h1>{picture}<h2>Figures</h2><table><tr>{head}</tr>{body}</table>
<h2>Config keys that differ</h2><table><tr><th>key</th>{names}</tr>{diff_rows}</table></body></html>
""", encoding="utf-8")


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge compare", description="Compare training runs: curves, figures, "
                                     "config differences.")
    parser.add_argument("runs", nargs="+", help="output directories of lmforge train runs")
    parser.add_argument("--metric", action="append", help="a logged metric to compare (repeatable; default: "
                        "loss, eval_loss and every evaluator metric)")
    parser.add_argument("--x", choices=tuple(X_KEYS), default="step", help="x axis (default step)")
    parser.add_argument("--smooth", type=float, default=0.6, help="EMA weight for the curves, 0-0.99 (default 0.6)")
    parser.add_argument("--plot", help="write the curves to this PNG")
    parser.add_argument("--html", help="write the curves, table and config diff to this HTML page")
    args = parser.parse_args(argv)
    if not 0 <= args.smooth < 1:
        raise ConfigError(f"--smooth must be in [0, 1), got {args.smooth}")
    runs = [load_run(Path(p)) for p in args.runs]
    metrics = args.metric or default_metrics(runs)
    missing = [m for m in metrics if not any(run.series(m, "step") for run in runs)]
    if missing:
        raise ConfigError(f"no run logged {', '.join(missing)}; logged: {', '.join(default_metrics(runs)) or 'nothing'}")
    table = summary(runs, metrics)
    diff = config_diff(runs)
    print(format_table(table))
    print("\nconfig keys that differ:" if diff else "\nthe runs' configs do not differ")
    for key, values in diff.items():
        print(f"  {key}: " + ", ".join(f"{run.name}={value}" for run, value in zip(runs, values)))
    image = None
    if args.plot or args.html:
        image = Path(args.plot) if args.plot else Path(args.html).with_suffix(".png")
        plot(runs, metrics, args.x, args.smooth, image)
        print(f"\ncurves written to {image}")
    if args.html:
        write_html(Path(args.html), table, diff, runs, image)
        print(f"report written to {args.html}")
    return 0
