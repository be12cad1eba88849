"""The bucket: the ObjectStore interface (base), its backends (s3, files), the age wrapper
(age), their settings (config) and the opener that knows them all (opener)."""
