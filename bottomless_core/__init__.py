"""bottomless: SQLite backups in S3-compatible object storage, in libsql's bottomless layout."""

__version__ = "0.1.0"
