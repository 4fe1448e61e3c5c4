"""What a `lmforge check` probe is: a registered, documented unit that measures one thing about a fine-tuned
model and compares it with a threshold.

    from lmforge.check.probe import PROBES, Probe, ProbeResult, Example

    def run_termination(ctx: CheckContext, settings: dict) -> ProbeResult:
        ...                                     # measure on ctx.samples(...) through ctx.tuned() / ctx.base()
        return ProbeResult.judge("termination", value=0.97, settings=settings, unit="share ended by the stop token",
                                 examples=[Example(source="data/heldout.json:12", prompt=..., output=...)])

    PROBES.add("termination", Probe(
        name="termination", summary="greedy answers end with the stop token and do not loop",
        run=run_termination, defaults={"fail_below": 0.9, "warn_below": 0.97, "samples": 32}))

A user adds a probe in one file: a module under lmforge/check/probes/ that calls PROBES.add (the package imports
every module in it), with its defaults and a docstring saying what it measures and why.

Verdicts: a probe's `settings` (its defaults, overridden by the YAML's `check:` section) give either
`fail_below` / `warn_below` (higher is better) or `fail_above` / `warn_above` (lower is better); `judge` picks
PASS, WARN or FAIL from them. A probe that cannot run on this model (no base model to compare, no data) returns
`ProbeResult.skipped(...)`, which is reported and never fails the check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.registry import Registry

if TYPE_CHECKING:
    from lmforge.check.context import CheckContext

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass
class Example:
    """One probed item, for the report: where it came from, what was asked, what came back."""

    source: str  # "<data file>:<record index>" or "generated:<seed>:<n>"
    prompt: str
    output: str
    expected: str | None = None
    note: str = ""  # what is wrong with it (the reason it is among the worst)


@dataclass
class ProbeResult:
    name: str
    verdict: str  # PASS | WARN | FAIL | SKIP
    value: float | None  # the measured figure
    unit: str  # what the value is ("share of answers ending with the stop token")
    threshold: str  # the rule, as the report prints it ("FAIL < 0.90, WARN < 0.97")
    examples: list[Example] = field(default_factory=list)  # the worst few
    details: dict[str, Any] = field(default_factory=dict)  # other figures (per-variant values, base model's value)

    @classmethod
    def judge(cls, name: str, value: float, settings: dict, unit: str, examples: list[Example] | None = None,
              details: dict | None = None) -> ProbeResult:
        """The verdict from `settings`' fail_/warn_ below/above thresholds."""
        verdict, rules = PASS, []
        if "fail_below" in settings or "warn_below" in settings:
            if "fail_below" in settings:
                rules.append(f"FAIL < {settings['fail_below']:g}")
                verdict = FAIL if value < settings["fail_below"] else verdict
            if "warn_below" in settings:
                rules.append(f"WARN < {settings['warn_below']:g}")
                verdict = WARN if verdict == PASS and value < settings["warn_below"] else verdict
        if "fail_above" in settings or "warn_above" in settings:
            if "fail_above" in settings:
                rules.append(f"FAIL > {settings['fail_above']:g}")
                verdict = FAIL if value > settings["fail_above"] else verdict
            if "warn_above" in settings:
                rules.append(f"WARN > {settings['warn_above']:g}")
                verdict = WARN if verdict == PASS and value > settings["warn_above"] else verdict
        return cls(name, verdict, value, unit, ", ".join(rules) or "reported only", examples or [], details or {})

    @classmethod
    def skipped(cls, name: str, why: str) -> ProbeResult:
        return cls(name, SKIP, None, why, "", [], {})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    name: str
    summary: str  # one line: what it measures
    run: Callable[[CheckContext, dict], ProbeResult]
    defaults: dict[str, Any] = field(default_factory=dict)  # thresholds and sizes; the YAML overrides them
    default_on: bool = True  # part of the default suite (when `check:` names no probes)


PROBES: Registry[Probe] = Registry("check probe")
