"""The FHIR R4 view for EHRs: ImagingStudy search and read at ``/fhir`` (DiagnosticReport read), through the history service."""

from web.fhir.routes import FhirView

__all__ = ["FhirView"]
