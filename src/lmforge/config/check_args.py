"""`lmforge check`'s settings: the YAML's `check:` mapping.

    check:
      probes: [template_roundtrip, serve_parity, termination]   # default: every probe that is on by default
      seed: 0                # probe generation is deterministic for a seed
      samples: 24            # held-out prompts per probe
      max_new_tokens: 64
      output_dir: runs/sft/check                                # default: <run dir>/check, else ./check_report
      termination: {fail_below: 0.9, loop_n: 4}                 # a probe's own settings over its defaults

The reserved keys are checked here; probe names and their settings are checked against the probe registry by
`parse_check`, which takes the registry's {name: defaults} as an argument, so the config layer never imports
the probes (they sit six layers up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError, did_you_mean

RESERVED = ("probes", "seed", "samples", "max_new_tokens", "output_dir")


@dataclass(frozen=True)
class CheckArguments:
    check: dict | None = field(
        default=None,
        metadata={"help": "lmforge check: a mapping of probes (list of probe names; default: every default probe), "
                  "seed (0), samples (held-out prompts per probe, 24), max_new_tokens (64), output_dir (default "
                  "<run dir>/check, else ./check_report) and, per probe name, a mapping of its settings "
                  "(thresholds fail_below / warn_below or fail_above / warn_above, sizes) over its defaults."},
    )


@dataclass(frozen=True)
class CheckSettings:
    """The checked `check:` section."""

    probes: tuple[str, ...]
    seed: int = 0
    samples: int = 24
    max_new_tokens: int = 64
    output_dir: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # probe -> its defaults with the YAML's over them


def _int(section: dict, key: str, default: int, low: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"check.{key}: expects an integer >= {low}, got {value!r}")
    return value


def parse_check(section: Any, catalog: dict[str, dict[str, Any]], default_on: list[str]) -> CheckSettings:
    """The checked `check:` mapping.

    Args:
        section: the YAML's `check:` value (None: every default).
        catalog: every registered probe's name -> its default settings (the keys a probe accepts).
        default_on: the probes run when `probes` is not given, in order.

    Raises:
        ConfigError: naming `check.<key>` or `check.<probe>.<key>`, with the nearest valid name.
    """
    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ConfigError(f"check: expects a mapping like {{probes: [termination], samples: 24}}, "
                          f"got {type(section).__name__}")
    for key in section:
        if key not in RESERVED and key not in catalog:
            names = [*RESERVED, *catalog]
            raise ConfigError(f"check.{key}: not a check setting nor a probe{did_you_mean(str(key), names)}; "
                              f"probes: {', '.join(catalog)}")
    probes = section.get("probes")
    if probes is None:
        probes = list(default_on)
    elif isinstance(probes, str):
        probes = [p.strip() for p in probes.split(",") if p.strip()]  # a key=value override gives one string
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise ConfigError(f"check.probes: expects a list of probe names, got {probes!r}")
    for name in probes:
        if name not in catalog:
            raise ConfigError(f"check.probes: unknown probe {name!r}{did_you_mean(name, list(catalog))}; "
                              f"probes: {', '.join(catalog)}")
    if len(set(probes)) != len(probes):
        raise ConfigError(f"check.probes: names a probe twice: {probes}")
    settings = {}
    for name, defaults in catalog.items():
        given = section.get(name) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"check.{name}: expects a mapping of that probe's settings "
                              f"({', '.join(defaults) or 'it has none'}), got {given!r}")
        # every probe takes samples / max_new_tokens (check.<probe>.samples: 8) besides its own defaults
        accepted = {"samples": 24, "max_new_tokens": 64, **defaults}
        for key, value in given.items():
            if key not in accepted:
                raise ConfigError(f"check.{name}.{key}: not a setting of probe {name}"
                                  f"{did_you_mean(str(key), list(accepted))}; its settings: "
                                  f"{', '.join(accepted)}")
            default = accepted[key]
            # the default's type is the setting's type; an int is fine where a float is expected
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"check.{name}.{key}: expects a number, got {value!r}")
            elif default is not None and not isinstance(value, type(default)):
                raise ConfigError(f"check.{name}.{key}: expects {type(default).__name__}, got {value!r}")
        # check-level samples / max_new_tokens, when given, override a probe's own defaults; its own section wins
        shared = {k: section[k] for k in ("samples", "max_new_tokens") if k in section}
        settings[name] = {**defaults, **shared, **given}
    output_dir = section.get("output_dir")
    if output_dir is not None and not isinstance(output_dir, str):
        raise ConfigError(f"check.output_dir: expects a directory path, got {output_dir!r}")
    return CheckSettings(probes=tuple(probes), seed=_int(section, "seed", 0, 0), samples=_int(section, "samples", 24, 1),
                         max_new_tokens=_int(section, "max_new_tokens", 64, 1), output_dir=output_dir,
                         settings=settings)
