"""Check every record of a config's datasets against its declared format, without a model or tokenizer.

    report = validate_datasets(cfg.data, stage="sft")
    for problem in report.problems: print(problem)        # data/train.jsonl:12: no response (...)

Each record goes through the loader's own steps (`sources.scan_records`, the entry's column check and the
format converter `convert_record`), so a record reported bad here is exactly one `lmforge train` would
refuse or drop; the difference is that validation reads on and names all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lmforge.config.data_args import DataArguments
from lmforge.data.dataset_info import DatasetSpec, resolve_datasets
from lmforge.data.formats import InvalidRecord, convert_record
from lmforge.data.loading import check_columns, check_stage, data_kind_of, kto_tag, no_records
from lmforge.data.sources import scan_records
from lmforge.errors import DataError


@dataclass
class DatasetReport:
    name: str
    records: int = 0
    bad: Counter = field(default_factory=Counter)  # reason -> count

    @property
    def good(self) -> int:
        return self.records - sum(self.bad.values())


@dataclass
class ValidationReport:
    datasets: list[DatasetReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "where: reason", in file order

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_datasets(data_args: DataArguments, stage: str) -> ValidationReport:
    """Validate `dataset` and `eval_dataset` of `data_args` for `stage`; problems are listed, not raised."""
    report = ValidationReport()
    names = list(dict.fromkeys(data_args.dataset_names + data_args.eval_dataset_names))
    if not names:
        raise DataError("no dataset to validate; set 'dataset' (and/or 'eval_dataset') in the config")
    specs = resolve_datasets(names, data_args.dataset_dir)
    try:
        check_stage(specs, stage)
    except DataError as err:
        report.problems.append(str(err))
    for spec in specs:
        report.datasets.append(_validate_one(spec, stage, data_args.placeholders, report.problems))
    return report


def _validate_one(spec: DatasetSpec, stage: str, placeholders, problems: list[str]) -> DatasetReport:
    result = DatasetReport(spec.name)
    readable, found = [], []  # found: (file number, row, message), listed in file order at the end
    for file_number, path in enumerate(spec.paths):
        for located in scan_records(path):
            result.records += 1
            if located.error is not None:
                result.bad[located.error.split(" (")[0]] += 1
                found.append((file_number, located.row, f"{located.where}: {located.error}"))
            else:
                readable.append((file_number, located))
    if not result.records:
        raise no_records(spec)  # as `train` does: nothing to train on is an error, not "all good"
    try:
        if readable:  # with no readable record, the records' own problems say it all
            check_columns(spec, [located.record for _, located in readable])
    except DataError as err:  # a column the entry names is missing: no record of the file can load
        problems.extend([str(err)] + [message for _, _, message in sorted(found)])
        result.bad["missing column"] += len(readable)
        return result
    kind = data_kind_of(stage)
    for file_number, located in readable:
        try:
            convert_record(located.record, spec, placeholders=placeholders,
                           allow_empty_response=kind.allows_empty_response)
            if kind.tagged:
                kto_tag(located.record, spec.columns.kto_tag)
        except InvalidRecord as err:
            result.bad[err.reason] += 1
            found.append((file_number, located.row,
                          f"{located.where}: {err.reason} (dataset '{spec.name}', {spec.formatting} format)"))
    problems.extend(message for _, _, message in sorted(found))
    return result
