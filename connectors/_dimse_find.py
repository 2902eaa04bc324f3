"""The C-FIND identifier a DIMSE query sends, and the information model it is sent under.

Study Root FIND at STUDY level (PS3.4 C.6.2.1), with Patient Root as the fallback for peers
that accept only that model.
"""

from __future__ import annotations

from collections.abc import Collection

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from connectors.normalize import STUDY_RETURN_KEYWORDS
from federation.errors import SourceProtocolError
from federation.models import StudyQuery

FIND_MODELS = (
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelFind,
)


def accepted_model(accepted: Collection[str]) -> str:
    """The first of Study Root / Patient Root FIND among the abstract syntaxes the peer accepted."""
    for model in FIND_MODELS:
        if model in accepted:
            return str(model)
    raise SourceProtocolError("the peer accepts neither Study Root nor Patient Root C-FIND")


def find_identifier(query: StudyQuery, charset: str | None) -> Dataset:
    """The STUDY-level C-FIND identifier (PS3.4 C.6.2.1): the query's matching keys, the rest as return keys.

    A value outside ASCII needs a declared character set: UTF-8 (ISO_IR 192) is then sent
    whatever the source is configured with, since the default repertoire cannot carry it.
    """
    identifier = Dataset()
    values = [
        query.patient_id,
        query.issuer_of_patient_id,
        query.patient_name,
        query.other_patient_id,
        query.accession_number,
    ]
    if not encodable(values, charset):
        # Never let a value be written with replacement characters: '?' is a C-FIND wildcard.
        charset = "ISO_IR 192"
    if charset:
        identifier.SpecificCharacterSet = charset
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_RETURN_KEYWORDS:
        setattr(identifier, keyword, "")
    if query.patient_id is not None:
        identifier.PatientID = query.patient_id
    if query.issuer_of_patient_id is not None:
        identifier.IssuerOfPatientID = query.issuer_of_patient_id
    if query.patient_name is not None:
        identifier.PatientName = query.patient_name
    if query.patient_birth_date is not None:
        identifier.PatientBirthDate = query.patient_birth_date.strftime("%Y%m%d")
    if query.study_instance_uid is not None:
        identifier.StudyInstanceUID = query.study_instance_uid
    elif query.study_instance_uids:
        identifier.StudyInstanceUID = list(query.study_instance_uids)  # UID list, PS3.4 C.2.2.2.2
    if query.accession_number is not None:
        identifier.AccessionNumber = query.accession_number
    if query.study_date is not None:
        identifier.StudyDate = query.study_date.dicom()  # range matching, PS3.4 C.2.2.2.5
    if query.modalities:
        identifier.ModalitiesInStudy = list(query.modalities)  # any of them, PS3.4 C.6.2.1.3
    if query.other_patient_id is not None:
        item = Dataset()
        item.PatientID = query.other_patient_id
        item.IssuerOfPatientID = query.other_patient_id_issuer or ""
        identifier.OtherPatientIDsSequence = [item]
    return identifier


def encodable(values: list[str | None], charset: str | None) -> bool:
    """Whether every value can be written exactly in ``charset`` (None: the default repertoire)."""
    text = "".join(v for v in values if v)
    if not charset:
        return text.isascii()
    try:
        codecs = [python_encoding[term.strip()] for term in charset.split("\\") if term.strip()]
    except KeyError:
        return text.isascii()
    if not codecs:
        return text.isascii()
    for codec in codecs:
        try:
            text.encode(codec)
            return True
        except UnicodeEncodeError:
            continue
    return False
