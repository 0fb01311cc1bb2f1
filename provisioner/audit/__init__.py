"""The hash-chained audit log: a pure chain (`chain`) stored one object per entry in S3 (`log`)."""
