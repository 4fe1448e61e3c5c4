"""An lm-evaluation-harness task YAML, read and checked: `TaskSpec`.

    spec = read_task_yaml("tasks/arc_easy_local.yaml")
    spec.task, spec.output_type, spec.metrics        # 'arc_easy_local', 'multiple_choice', ('acc', 'acc_norm')

Keys and defaults are lm-eval's (`TaskConfig`): target_delimiter " ", fewshot_delimiter "\\n\\n", a
generate_until task without generation_kwargs stops at the fewshot delimiter and decodes greedily. Python
hooks (`process_docs`, `process_results`, `!function`) are refused: lmforge runs no code from task files.
Every error names the task file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import ConfigError, did_you_mean

OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")

METRICS_BY_TYPE = {
    "multiple_choice": ("acc", "acc_norm", "acc_bytes", "exact_match"),
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "generate_until": ("exact_match",),
}
"""The metrics each output type can compute (lm-eval's `process_results`); the first ones are its defaults."""

DEFAULT_METRICS = {
    "multiple_choice": ("acc",),
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "generate_until": ("exact_match",),
}

ACCEPTED_KEYS = (
    "task", "task_alias", "tag", "group", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "doc_to_text", "doc_to_target", "doc_to_choice",
    "description", "target_delimiter", "fewshot_delimiter", "num_fewshot", "output_type", "generation_kwargs",
    "metric_list", "filter_list", "metadata", "repeats", "should_decontaminate", "doc_to_decontamination_query",
    "fewshot_config",
)
FEWSHOT_SAMPLERS = ("default", "first_n")
"""lm-eval's samplers: `default` draws shots at random (seed 1234), `first_n` takes the first n in order
(MMLU's and CMMLU's canonical shots)."""
REFUSED_KEYS = {
    "process_docs": "a Python function over the documents; write the processed rows into the data file instead",
    "process_results": "a Python function; use metric_list with the built-in metrics",
    "custom_dataset": "a Python function; give dataset_path and dataset_kwargs.data_files",
    "include": "task inheritance is not supported yet; write the keys into this file",
    "use_prompt": "promptsource prompts need downloads; write doc_to_text / doc_to_target",
    "doc_to_image": "multimodal tasks are out of scope", "doc_to_audio": "multimodal tasks are out of scope",
    "gen_prefix": "not supported yet",
}
FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
"""dataset_path builders (lm-eval passes them to `datasets.load_dataset`) and the file endings they read."""


@dataclass(frozen=True)
class FilterStep:
    function: str  # regex | take_first | lowercase | uppercase | remove_whitespace
    regex_pattern: str = r"#### (\-?[0-9\.\,]+)"  # lm-eval's RegexFilter default (GSM8K's answer line)
    group_select: int = 0
    fallback: str = "[invalid]"


@dataclass(frozen=True)
class TaskSpec:
    """One task file's keys, checked; field names are the YAML's."""

    path: Path
    task: str
    output_type: str
    dataset_path: str
    data_files: dict[str, list[str]]  # split -> files, resolved
    builder: str  # json | csv | parquet | arrow
    test_split: str | None
    validation_split: str | None
    training_split: str | None
    fewshot_split: str | None
    doc_to_text: Any
    doc_to_target: Any
    doc_to_choice: Any
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int | None = None
    until: tuple[str, ...] = ()
    max_gen_toks: int = 256  # lm-eval's HFLM default
    metrics: tuple[str, ...] = ()
    metric_kwargs: dict[str, dict] = field(default_factory=dict)  # exact_match: ignore_case, regexes_to_ignore...
    filters: dict[str, tuple[FilterStep, ...]] = field(default_factory=dict)  # name -> steps; {"none": ()} default
    tags: tuple[str, ...] = ()
    fewshot_sampler: str = "default"  # fewshot_config.sampler

    @property
    def eval_split(self) -> str:
        """lm-eval scores the test split, else the validation split."""
        return self.test_split or self.validation_split  # type: ignore[return-value]

    @property
    def source_of_fewshot(self) -> str | None:
        """fewshot_split, else training, validation, test split (lm-eval's `fewshot_docs` order)."""
        return self.fewshot_split or self.training_split or self.validation_split or self.test_split


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that names `!function` (a Python hook) instead of failing on an unknown tag."""


def _refuse_function(loader, node):
    raise ConfigError(f"!function {loader.construct_scalar(node)}: lmforge runs no Python from task files")


_StrictLoader.add_constructor("!function", _refuse_function)


def read_task_yaml(path: str | Path) -> TaskSpec:
    """Read and check one lm-evaluation-harness task file; every problem is a ConfigError naming the file and key."""
    return parse_task(load_yaml_mapping(Path(path)), Path(path))


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A task or group file's mapping (`!function` refused by name)."""
    if not path.is_file():
        raise ConfigError(f"task file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a task file is a mapping of key: value")
    return raw


def parse_task(raw: dict[str, Any], path: Path) -> TaskSpec:
    where = str(path)
    for key in raw:
        if key in REFUSED_KEYS:
            raise ConfigError(f"{where}: key '{key}' is not supported ({REFUSED_KEYS[key]})")
        if key not in ACCEPTED_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(str(key), ACCEPTED_KEYS)}")
    if "group" in raw and "task" not in raw:
        raise ConfigError(f"{where}: group files (a 'group' with a task list) are not supported yet; name each task")
    task = _required_str(raw, "task", where)
    output_type = raw.get("output_type", "generate_until")  # lm-eval's default
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"{where}: output_type '{output_type}' is not one of {', '.join(OUTPUT_TYPES)}"
                          f"{did_you_mean(str(output_type), OUTPUT_TYPES)}")
    builder, data_files = _data_files(raw, path)
    splits = {k: raw.get(k) for k in ("test_split", "validation_split", "training_split", "fewshot_split")}
    for key, split in splits.items():
        if split is not None and split not in data_files:
            raise ConfigError(f"{where}: {key} '{split}' is not among the splits of dataset_kwargs.data_files "
                              f"({', '.join(data_files)}){did_you_mean(str(split), data_files)}")
    if not (splits["test_split"] or splits["validation_split"]):
        raise ConfigError(f"{where}: set test_split or validation_split (the documents to score)")
    if output_type == "multiple_choice" and raw.get("doc_to_choice") is None:
        raise ConfigError(f"{where}: output_type multiple_choice needs doc_to_choice (a column, a list or a Jinja template)")
    metrics, metric_kwargs = _metrics(raw, output_type, where)
    until, max_gen_toks = _generation(raw, output_type, where)
    fewshot_sampler = _fewshot_sampler(raw.get("fewshot_config"), where)
    num_fewshot = raw.get("num_fewshot")
    if num_fewshot is not None and (not isinstance(num_fewshot, int) or isinstance(num_fewshot, bool) or num_fewshot < 0):
        raise ConfigError(f"{where}: num_fewshot must be a whole number >= 0, got {num_fewshot!r}")
    tags = raw.get("tag") or []
    return TaskSpec(
        path=path, task=task, output_type=output_type, dataset_path=str(raw["dataset_path"]), data_files=data_files,
        builder=builder, fewshot_split=splits["fewshot_split"], test_split=splits["test_split"],
        validation_split=splits["validation_split"], training_split=splits["training_split"],
        doc_to_text=raw.get("doc_to_text"), doc_to_target=raw.get("doc_to_target"),
        doc_to_choice=raw.get("doc_to_choice"), description=str(raw.get("description") or ""),
        target_delimiter=_str_key(raw, "target_delimiter", " ", where),
        fewshot_delimiter=_str_key(raw, "fewshot_delimiter", "\n\n", where), num_fewshot=num_fewshot,
        fewshot_sampler=fewshot_sampler,
        until=until, max_gen_toks=max_gen_toks, metrics=metrics, metric_kwargs=metric_kwargs,
        filters=_filters(raw, where), tags=tuple([tags] if isinstance(tags, str) else tags),
    )


def _required_str(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: set '{key}' (a name)")
    return value


def _str_key(raw: dict, key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be text, got {value!r}")
    return value


def _resolve(file: str, path: Path) -> Path:
    """A data file as written: relative to the working directory (as lm-eval reads it), else to the task file."""
    candidate = Path(file).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return path.parent / candidate


def _data_files(raw: dict, path: Path) -> tuple[str, dict[str, list[str]]]:
    """(builder, split -> files) from dataset_path json/csv/parquet/arrow + dataset_kwargs.data_files, or from a
    local file or directory in dataset_path (a directory's files named after their split: test.jsonl, ...)."""
    where = str(path)
    dataset_path = raw.get("dataset_path")
    if not isinstance(dataset_path, str) or not dataset_path:
        raise ConfigError(f"{where}: set 'dataset_path' (json, csv, parquet, arrow, or a local file or directory)")
    kwargs = raw.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: dataset_kwargs must be a mapping")
    unknown = [k for k in kwargs if k != "data_files"]
    if unknown:
        raise ConfigError(f"{where}: dataset_kwargs.{unknown[0]} is not supported (only data_files)")
    if dataset_path in FORMATS.values():
        files = kwargs.get("data_files")
        if files is None:
            raise ConfigError(f"{where}: dataset_path '{dataset_path}' needs dataset_kwargs.data_files "
                              "(a file, a list, or a mapping of split -> file)")
        by_split = files if isinstance(files, dict) else {"train": files}  # datasets' name for an unsplit file
        resolved = {str(split): [_resolve(f, path) for f in ([v] if isinstance(v, str) else v)]
                    for split, v in by_split.items()}
        builder = dataset_path
    else:
        local = _resolve(dataset_path, path)
        if local.is_file():
            resolved, builder = {"train": [local]}, FORMATS.get(local.suffix, "")
        elif local.is_dir():
            found = sorted(p for p in local.iterdir() if p.suffix in FORMATS)
            resolved = {p.stem: [p] for p in found}
            builder = FORMATS[found[0].suffix] if found else ""
        else:
            raise ConfigError(f"{where}: dataset_path '{dataset_path}' is neither json/csv/parquet/arrow nor a local "
                              "file or directory (lmforge downloads nothing from the Hub)")
        if not builder:
            raise ConfigError(f"{where}: dataset_path '{dataset_path}' holds no .json/.jsonl/.csv/.parquet/.arrow file")
    for split, files in resolved.items():
        for file in files:
            if not file.is_file():
                raise ConfigError(f"{where}: dataset_kwargs.data_files: the {split} file {file} does not exist")
    return builder, {split: [str(f) for f in files] for split, files in resolved.items()}


def _metrics(raw: dict, output_type: str, where: str) -> tuple[tuple[str, ...], dict[str, dict]]:
    entries = raw.get("metric_list")
    if entries is None:
        return DEFAULT_METRICS[output_type], {}
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: metric_list must be a list of {{metric: name, ...}}")
    names, kwargs = [], {}
    allowed = METRICS_BY_TYPE[output_type]
    for entry in entries:
        name = entry.get("metric") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ConfigError(f"{where}: metric_list entry {entry!r} has no 'metric' name")
        if name not in allowed:
            raise ConfigError(f"{where}: metric_list: '{name}' is not a metric of output_type {output_type} "
                              f"({', '.join(allowed)}){did_you_mean(name, allowed)}")
        extra = {k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better")}
        bad = [k for k in extra if k not in ("ignore_case", "ignore_punctuation", "regexes_to_ignore", "ignore_numbers")]
        if bad:
            raise ConfigError(f"{where}: metric_list: {name} does not take '{bad[0]}'")
        names.append(name)
        kwargs[name] = extra
    return tuple(names), kwargs


def _generation(raw: dict, output_type: str, where: str) -> tuple[tuple[str, ...], int]:
    fewshot_delimiter = raw.get("fewshot_delimiter", "\n\n")
    kwargs = raw.get("generation_kwargs")
    if kwargs is None:
        return (fewshot_delimiter,), 256
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: generation_kwargs must be a mapping")
    if kwargs.get("do_sample"):
        raise ConfigError(f"{where}: generation_kwargs.do_sample: lmforge eval decodes greedily only")
    bad = [k for k in kwargs if k not in ("until", "max_gen_toks", "do_sample", "temperature")]
    if bad:
        raise ConfigError(f"{where}: generation_kwargs.{bad[0]} is not supported (until, max_gen_toks, do_sample: false)")
    until = kwargs.get("until", [fewshot_delimiter])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise ConfigError(f"{where}: generation_kwargs.until must be a string or a list of strings")
    max_gen_toks = kwargs.get("max_gen_toks", 256)
    if not isinstance(max_gen_toks, int) or max_gen_toks < 1:
        raise ConfigError(f"{where}: generation_kwargs.max_gen_toks must be a whole number >= 1")
    return tuple(until), max_gen_toks


FILTER_FUNCTIONS = ("regex", "take_first", "lowercase", "uppercase", "remove_whitespace")


def _filters(raw: dict, where: str) -> dict[str, tuple[FilterStep, ...]]:
    entries = raw.get("filter_list")
    if entries is None:
        return {"none": ()}  # lm-eval's default pipeline: take the first response
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: filter_list must be a list of {{name, filter: [...]}}")
    pipelines = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: filter_list entry {entry!r} needs a 'name'")
        steps = []
        for step in entry.get("filter") or []:
            function = step.get("function") if isinstance(step, dict) else None
            if function not in FILTER_FUNCTIONS:
                raise ConfigError(f"{where}: filter_list '{entry['name']}': function {function!r} is not one of "
                                  f"{', '.join(FILTER_FUNCTIONS)}{did_you_mean(str(function), FILTER_FUNCTIONS)}")
            options = {k: v for k, v in step.items() if k != "function"}
            try:
                steps.append(FilterStep(function, **options))
            except TypeError:
                raise ConfigError(f"{where}: filter_list '{entry['name']}': {function} takes regex_pattern, "
                                  f"group_select, fallback; got {', '.join(options)}") from None
        pipelines[entry["name"]] = tuple(steps)
    from lmforge.eval.tasks.filters import check_patterns

    check_patterns(pipelines, where)
    return pipelines


def _fewshot_sampler(config, where: str) -> str:
    """fewshot_config: only `sampler` (default | first_n); its other keys (samples, fewshot_indices, doc_to_*
    overrides, process_docs) are refused by name."""
    if config is None:
        return "default"
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: fewshot_config must be a mapping like {{sampler: first_n}}, got {config!r}")
    other = sorted(k for k in config if k != "sampler")
    if other:
        raise ConfigError(f"{where}: fewshot_config.{other[0]} is not supported (only fewshot_config.sampler: "
                          f"{' | '.join(FEWSHOT_SAMPLERS)}); give the shots' split with fewshot_split")
    sampler = config.get("sampler", "default")
    if sampler not in FEWSHOT_SAMPLERS:
        raise ConfigError(f"{where}: fewshot_config.sampler {sampler!r} is not one of {', '.join(FEWSHOT_SAMPLERS)}"
                          f"{did_you_mean(str(sampler), FEWSHOT_SAMPLERS)}")
    return sampler
