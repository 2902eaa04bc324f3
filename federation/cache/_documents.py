"""The cache's documents: the two indices' strict mappings, their stable ids, and a study as stored and as read back."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from federation.identity.names import fold, folded_name, group_parts
from federation.models import PatientQuery, SourceInfo, StudyRecord

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "source_id": {"type": "keyword"},
        "source_name": {"type": "keyword", "index": False},
        "query_key": {"type": "keyword"},
        "study_instance_uid": {"type": "keyword"},
        "patient_id": {"type": "keyword"},
        "issuer_of_patient_id": {"type": "keyword"},
        "patient_name": {"type": "keyword"},
        "patient_name_folded": {"type": "keyword"},
        "patient_family_folded": {"type": "keyword"},
        "patient_name_groups": {"type": "keyword", "index": False},
        "patient_birth_date": {"type": "date", "format": "strict_date"},
        "patient_sex": {"type": "keyword"},
        "study_date": {"type": "date", "format": "strict_date"},
        "study_time": {"type": "keyword"},
        "accession_number": {"type": "keyword"},
        "modalities": {"type": "keyword"},
        "description": {"type": "text"},
        "referring_physician_name": {"type": "keyword"},
        "number_of_series": {"type": "integer"},
        "number_of_instances": {"type": "integer"},
        "retrieve_ae_title": {"type": "keyword", "index": False},
        "retrieve_url": {"type": "keyword", "index": False},
        "specific_character_set": {"type": "keyword", "index": False},
        "cached_at": {"type": "date"},
    },
}


ANSWERS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "query_key": {"type": "keyword"},
        "source_id": {"type": "keyword"},
        "answered_at": {"type": "date"},
        "study_uids": {"type": "keyword"},
        "matches": {"type": "object", "enabled": False},
    },
}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def answer_id(query_key: str, source_id: str) -> str:
    """The stable id of one source's answer to one query (the answers index)."""
    return hashlib.sha256(f"{query_key}\x00{source_id}".encode()).hexdigest()


def exam_document(
    source: SourceInfo, query: PatientQuery, record: StudyRecord, now: dt.datetime
) -> dict[str, Any]:
    """One study as the exams index stores it."""
    return {
        "source_id": source.id,
        "source_name": source.name,
        "query_key": query.cache_key(),
        "study_instance_uid": record.study_instance_uid,
        "patient_id": record.patient_id,
        "issuer_of_patient_id": record.issuer_of_patient_id,
        "patient_name": record.patient_name,
        "patient_name_folded": folded_name(record.patient_name) if record.patient_name else None,
        # One folded family name per group: a search in kanji or hangul finds the name too.
        "patient_family_folded": list(dict.fromkeys(fold(p.family) for p in group_parts(record.patient_pn)))
        if record.patient_pn
        else None,
        "patient_name_groups": list(record.patient_name_groups) if record.patient_name_groups else None,
        "patient_birth_date": record.patient_birth_date.isoformat() if record.patient_birth_date else None,
        "patient_sex": record.patient_sex,
        "study_date": record.study_date.isoformat() if record.study_date else None,
        "study_time": record.study_time.isoformat() if record.study_time else None,
        "accession_number": record.accession_number,
        "modalities": list(record.modalities),
        "description": record.description,
        "referring_physician_name": record.referring_physician_name,
        "number_of_series": record.number_of_series,
        "number_of_instances": record.number_of_instances,
        "retrieve_ae_title": record.retrieve_ae_title,
        "retrieve_url": record.retrieve_url,
        "specific_character_set": list(record.specific_character_set),
        "cached_at": now.isoformat(),
    }


_RECORD_FIELDS = frozenset(StudyRecord.model_fields)
"""StudyRecord's field names, looked up once: ``model_fields`` is a computed class property."""


def cached_record(source: dict[str, Any], **extra: Any) -> StudyRecord:
    """A cached document as a StudyRecord, validated once with ``extra`` fields (no copy after)."""
    fields = {k: v for k, v in source.items() if k in _RECORD_FIELDS and v is not None}
    fields["modalities"] = tuple(fields.get("modalities", ()))
    fields["specific_character_set"] = tuple(fields.get("specific_character_set", ()))
    if "patient_name_groups" in fields:
        fields["patient_name_groups"] = tuple(fields["patient_name_groups"])
    fields.update(extra)
    return StudyRecord.model_validate(fields)
