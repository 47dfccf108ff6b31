"""Live COSMOS export: new rows to S3 as CR1000X payloads, with crash-safe watermarks."""
