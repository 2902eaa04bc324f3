"""A pacsfed connector for FHIR R4 servers: ImagingStudy search by patient identifier (the SDK's worked example)."""

from pacsfed_fhir_connector.connector import FhirConnector
from pacsfed_fhir_connector.settings import BearerToken, FhirSourceSettings

__all__ = ["BearerToken", "FhirConnector", "FhirSourceSettings"]
