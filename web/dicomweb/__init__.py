"""The DICOMweb facade under /dicom-web/: QIDO-RS answered by the federation, WADO-RS forwarded to the holding source."""
