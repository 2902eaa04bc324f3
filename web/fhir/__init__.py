"""The FHIR R4 view for EHRs: ImagingStudy search at ``/fhir``, answered through the history service."""

from web.fhir.routes import FhirView

__all__ = ["FhirView"]
