"""QIDO-RS (PS3.18 10.6): matching keys -> SQL over the index -> DICOM JSON results.

Matching follows PS3.4 C.2.2.2: single value, UID lists, wildcards (``*``, ``?``), date ranges and,
with ``fuzzymatching=true``, case-insensitive prefix matching of person-name components.
Unsupported keys are ignored and named in a ``Warning`` header, as PS3.18 allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Select, String, and_, cast, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from consult_api.access import Principal
from consult_api.dicom import repository
from consult_api.dicom.models import Instance, Series, Study
from consult_api.errors import InvalidInput

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_DATE = re.compile(r"^\d{8}$")
_CONTROL_PARAMS = {"limit", "offset", "fuzzymatching", "includefield"}


class Level(StrEnum):
    study = "study"
    series = "series"
    instance = "instance"


class Match(StrEnum):
    uid = "uid"
    text = "text"
    name = "name"
    date = "date"
    number = "number"
    modality_in_study = "modality_in_study"


@dataclass(frozen=True)
class Key:
    column: InstrumentedAttribute[Any]
    match: Match
    level: Level


KEYS: dict[str, Key] = {
    "StudyInstanceUID": Key(Study.study_instance_uid, Match.uid, Level.study),
    "PatientName": Key(Study.patient_name, Match.name, Level.study),
    "PatientID": Key(Study.patient_id, Match.text, Level.study),
    "PatientBirthDate": Key(Study.patient_birth_date, Match.date, Level.study),
    "PatientSex": Key(Study.patient_sex, Match.text, Level.study),
    "AccessionNumber": Key(Study.accession_number, Match.text, Level.study),
    "StudyDate": Key(Study.study_date, Match.date, Level.study),
    "StudyID": Key(Study.study_id, Match.text, Level.study),
    "StudyDescription": Key(Study.study_description, Match.text, Level.study),
    "ReferringPhysicianName": Key(Study.referring_physician_name, Match.name, Level.study),
    "ModalitiesInStudy": Key(Study.id, Match.modality_in_study, Level.study),
    "SeriesInstanceUID": Key(Series.series_instance_uid, Match.uid, Level.series),
    "Modality": Key(Series.modality, Match.text, Level.series),
    "SeriesNumber": Key(Series.series_number, Match.number, Level.series),
    "SeriesDescription": Key(Series.series_description, Match.text, Level.series),
    "BodyPartExamined": Key(Series.body_part_examined, Match.text, Level.series),
    "SOPInstanceUID": Key(Instance.sop_instance_uid, Match.uid, Level.instance),
    "SOPClassUID": Key(Instance.sop_class_uid, Match.uid, Level.instance),
    "InstanceNumber": Key(Instance.instance_number, Match.number, Level.instance),
}
_LEVEL_ORDER = {Level.study: 0, Level.series: 1, Level.instance: 2}


@dataclass
class QidoQuery:
    level: Level
    filters: dict[str, list[str]] = field(default_factory=dict)
    fuzzy: bool = False
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    ignored: list[str] = field(default_factory=list)


def _keyword(name: str) -> str | None:
    """``PatientName`` or ``00100010`` -> ``PatientName``; None when it is neither."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _int_param(params: Mapping[str, Sequence[str]], name: str, default: int, maximum: int | None) -> int:
    values = params.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer") from exc
    if value < 0:
        raise InvalidInput(f"{name} must not be negative")
    return min(value, maximum) if maximum is not None else value


def parse_query(level: Level, params: Mapping[str, Sequence[str]]) -> QidoQuery:
    query = QidoQuery(level=level)
    query.limit = _int_param(params, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    query.offset = _int_param(params, "offset", 0, None)
    query.fuzzy = any(v.lower() == "true" for v in params.get("fuzzymatching", []))
    for value in params.get("includefield", []):
        for item in value.split(","):
            if item.strip().lower() == "all":
                query.include_all = True
            elif (keyword := _keyword(item.strip())) is not None:
                query.include.add(keyword)
    for name, values in params.items():
        if name in _CONTROL_PARAMS:
            continue
        keyword = _keyword(name)
        key = KEYS.get(keyword or "")
        if keyword is None or key is None or _LEVEL_ORDER[key.level] > _LEVEL_ORDER[level]:
            query.ignored.append(name)
            continue
        query.filters[keyword] = [v for v in values if v != ""]
    return query


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wildcard(column: Any, value: str) -> ColumnElement[bool]:
    pattern = _escape_like(value).replace("*", "%").replace("?", "_")
    return func.lower(column).like(pattern.lower(), escape="\\")


def _name_match(column: Any, value: str, fuzzy: bool) -> ColumnElement[bool]:
    if "*" in value or "?" in value:
        return _wildcard(column, value)
    if not fuzzy:
        return func.lower(column) == value.lower()
    words = [w for w in re.split(r"[\s^,]+", value) if w]
    clauses = []
    for word in words:
        prefix = _escape_like(word.lower())
        lowered = func.lower(column)
        clauses.append(
            or_(
                lowered.like(f"{prefix}%", escape="\\"),
                lowered.like(f"%^{prefix}%", escape="\\"),
                lowered.like(f"% {prefix}%", escape="\\"),
            )
        )
    return and_(*clauses)


def _date_match(column: Any, value: str) -> ColumnElement[bool]:
    if "-" not in value:
        _check_date(value)
        return column == value
    start, _, end = value.partition("-")
    clauses = []
    if start:
        clauses.append(column >= _check_date(start))
    if end:
        clauses.append(column <= _check_date(end))
    if not clauses:
        raise InvalidInput("a date range needs at least one end")
    clauses.append(column != "")
    return and_(*clauses)


def _check_date(value: str) -> str:
    if not _DATE.match(value):
        raise InvalidInput(f"dates are YYYYMMDD or YYYYMMDD-YYYYMMDD ranges, got {value!r}")
    return value


def _condition(keyword: str, key: Key, value: str, fuzzy: bool) -> ColumnElement[bool]:
    column = key.column
    if key.match is Match.uid:
        uids = [u for u in re.split(r"[,\\]", value) if u]
        return column.in_(uids)
    if key.match is Match.name:
        return _name_match(column, value, fuzzy)
    if key.match is Match.date:
        return _date_match(column, value)
    if key.match is Match.number:
        try:
            return column == int(value)
        except ValueError as exc:
            raise InvalidInput(f"{keyword} must be an integer") from exc
    if key.match is Match.modality_in_study:
        modalities = [m for m in re.split(r"[,\\]", value) if m]
        return Study.id.in_(select(Series.study_id).where(Series.modality.in_(modalities)))
    if "*" in value or "?" in value:
        return _wildcard(column, value)
    return cast(column, String) == value


def _base(level: Level, principal: Principal) -> Select[Any]:
    if level is Level.study:
        return repository.visible_studies(principal)
    if level is Level.series:
        return repository.visible_series(principal)
    return repository.visible_instances(principal)


def _ordering(level: Level) -> list[Any]:
    if level is Level.study:
        return [Study.study_date.desc(), Study.study_time.desc(), Study.id]
    if level is Level.series:
        return [Series.series_number, Series.id]
    return [Instance.instance_number, Instance.id]


def run_query(
    session: Session,
    principal: Principal,
    query: QidoQuery,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Sequence[Any]:
    statement = _base(query.level, principal)
    if study_uid is not None:
        statement = statement.where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        statement = statement.where(Series.series_instance_uid == series_uid)
    for keyword, values in query.filters.items():
        key = KEYS[keyword]
        for value in values:
            statement = statement.where(_condition(keyword, key, value, query.fuzzy))
    statement = statement.order_by(*_ordering(query.level)).limit(query.limit).offset(query.offset)
    return session.scalars(statement).unique().all()


# ---------------------------------------------------------------- DICOM JSON results


def element(keyword: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; empty values become a VR-only entry, as PS3.18 F.2 says."""
    vr = dictionary_VR(keyword)
    if value in (None, "", []):
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    return {"vr": vr, "Value": values}


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"{tag:08X}"


def attributes(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {_tag(k): element(k, v) for k, v in pairs}


def study_json(study: Study, retrieve_url: str) -> dict[str, Any]:
    return attributes(
        [
            ("StudyDate", study.study_date),
            ("StudyTime", study.study_time),
            ("AccessionNumber", study.accession_number),
            ("ModalitiesInStudy", list(study.modalities)),
            ("ReferringPhysicianName", study.referring_physician_name),
            ("StudyDescription", study.study_description),
            ("PatientName", study.patient_name),
            ("PatientID", study.patient_id),
            ("PatientBirthDate", study.patient_birth_date),
            ("PatientSex", study.patient_sex),
            ("StudyInstanceUID", study.study_instance_uid),
            ("StudyID", study.study_id),
            ("NumberOfStudyRelatedSeries", study.number_of_series),
            ("NumberOfStudyRelatedInstances", study.number_of_instances),
            ("RetrieveURL", retrieve_url),
        ]
    )


def series_json(series: Series, retrieve_url: str) -> dict[str, Any]:
    return attributes(
        [
            ("StudyInstanceUID", series.study.study_instance_uid),
            ("Modality", series.modality),
            ("SeriesDescription", series.series_description),
            ("SeriesInstanceUID", series.series_instance_uid),
            ("SeriesNumber", series.series_number),
            ("BodyPartExamined", series.body_part_examined),
            ("NumberOfSeriesRelatedInstances", series.number_of_instances),
            ("RetrieveURL", retrieve_url),
        ]
    )


def instance_json(instance: Instance, retrieve_url: str) -> dict[str, Any]:
    series = instance.series
    return attributes(
        [
            ("StudyInstanceUID", series.study.study_instance_uid),
            ("SeriesInstanceUID", series.series_instance_uid),
            ("Modality", series.modality),
            ("SOPClassUID", instance.sop_class_uid),
            ("SOPInstanceUID", instance.sop_instance_uid),
            ("InstanceNumber", instance.instance_number),
            ("Rows", instance.rows),
            ("Columns", instance.columns),
            ("NumberOfFrames", instance.number_of_frames),
            ("AvailableTransferSyntaxUID", instance.transfer_syntax_uid),
            ("RetrieveURL", retrieve_url),
        ]
    )


def include_from_header(
    result: dict[str, Any], header: Mapping[str, Any], query: QidoQuery
) -> dict[str, Any]:
    """Add ``includefield`` attributes from a stored header (only those it actually has)."""
    wanted = header.keys() if query.include_all else [_tag(k) for k in query.include]
    for tag in wanted:
        if tag not in result and tag in header and not _is_bulk(header[tag]):
            result[tag] = header[tag]
    return dict(sorted(result.items()))


def _is_bulk(value: Mapping[str, Any]) -> bool:
    return "BulkDataURI" in value or "InlineBinary" in value
