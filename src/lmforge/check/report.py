"""The check's verdict: a table on the terminal, check_report.json and a self-contained check_report.html.

    print(verdict_table(results))
    write_reports(output_dir, results, meta)   # -> (json path, html path)
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from lmforge.check.probe import FAIL, PASS, SKIP, WARN, ProbeResult

COLOURS = {PASS: "#c8f0c8", WARN: "#ffe8a0", FAIL: "#ffb8b8", SKIP: "#e0e0e0"}


def _cut(text: str | None, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _value(result: ProbeResult) -> str:
    return "-" if result.value is None else f"{result.value:.3f}"


def verdict_table(results: list[ProbeResult], examples: int = 3) -> str:
    """probe | value | threshold | verdict, then the worst examples of every probe that did not pass."""
    rows = [("probe", "value", "threshold", "verdict")] + [
        (r.name, _value(r), r.threshold or r.unit if r.verdict == SKIP else r.threshold, r.verdict) for r in results]
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(4)]
    lines = [" | ".join(_cut(cell, w).ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    for r in results:
        if r.verdict in (WARN, FAIL) and (r.examples or r.details.get("error")):
            lines.append(f"\n{r.name} ({r.verdict}): {r.unit}")
            if r.details.get("error"):
                lines.append(f"  error: {_cut(r.details['error'], 200)}")
            for ex in r.examples[:examples]:
                lines.append(f"  {ex.source}: {_cut(ex.note, 160)}")
                if ex.output:
                    lines.append(f"    output: {_cut(repr(ex.output), 120)}")
    return "\n".join(lines)


def write_reports(output_dir: Path, results: list[ProbeResult], meta: dict) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {**meta, "results": [r.to_dict() for r in results]}
    json_path = output_dir / "check_report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path = output_dir / "check_report.html"
    html_path.write_text(render_html(results, meta), encoding="utf-8")
    return json_path, html_path


def render_html(results: list[ProbeResult], meta: dict) -> str:
    """One page, no scripts: the verdict table with coloured cells, then each probe's examples and figures."""
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='#{e(r.name)}'>{e(r.name)}</a></td><td>{e(_value(r))}</td><td>{e(r.threshold)}</td>"
        f"<td style='background:{COLOURS[r.verdict]};font-weight:bold'>{r.verdict}</td><td>{e(r.unit)}</td></tr>"
        for r in results)
    sections = []
    for r in results:
        examples = "".join(
            f"<tr><td>{e(ex.source)}</td><td><pre>{e(_cut(ex.prompt, 2000))}</pre></td>"
            f"<td><pre>{e(_cut(ex.output, 2000))}</pre></td><td><pre>{e(_cut(ex.expected, 1000))}</pre></td>"
            f"<td>{e(ex.note)}</td></tr>" for ex in r.examples)
        table = (f"<table><tr><th>source</th><th>prompt</th><th>output</th><th>expected</th><th>note</th></tr>"
                 f"{examples}</table>") if examples else "<p>no examples</p>"
        details = e(json.dumps(r.details, indent=1, default=str, ensure_ascii=False))
        sections.append(f"<h2 id='{e(r.name)}'>{e(r.name)} <span style='background:{COLOURS[r.verdict]}'>"
                        f"&nbsp;{r.verdict}&nbsp;</span></h2>{table}<details><summary>figures</summary>"
                        f"<pre>{details}</pre></details>")
    notes = "".join(f"<li>{e(n)}</li>" for n in meta.get("notes", []))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lmforge check: {e(str(meta.get('model', '')))}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;vertical-align:top;text-align:left}}
pre{{white-space:pre-wrap;margin:0;max-width:40em}}</style></head><body>
<h1>lmforge check: {'FAIL' if any(r.verdict == FAIL for r in results) else 'PASS'}</h1>
<p>model {e(str(meta.get('model')))}, adapter {e(str(meta.get('adapter')))}, template {e(str(meta.get('template')))},
seed {e(str(meta.get('seed')))}</p><ul>{notes}</ul>
<table><tr><th>probe</th><th>value</th><th>threshold</th><th>verdict</th><th>measures</th></tr>{rows}</table>
{''.join(sections)}
</body></html>
"""
