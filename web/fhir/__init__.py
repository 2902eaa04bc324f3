"""The FHIR R4 view for EHRs: ImagingStudy search at ``/fhir``, answered through the history service."""

from web.fhir.resources import ReportView
from web.fhir.routes import FhirView, ReportLookup

__all__ = ["FhirView", "ReportLookup", "ReportView"]
