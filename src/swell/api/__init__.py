"""The HTTP surfaces: Amplitude ingestion, the Export API and the DSAR API."""
