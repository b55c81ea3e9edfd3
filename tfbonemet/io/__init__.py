"""I/O: reading studies (DICOM, images), discovery, DICOMweb, and atomic writes."""
