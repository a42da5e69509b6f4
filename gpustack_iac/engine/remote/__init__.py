"""Remote state: the checkpoint in an object store (S3, GCS, Azure Blob) or PostgreSQL, in Pulumi's DIY layout."""
