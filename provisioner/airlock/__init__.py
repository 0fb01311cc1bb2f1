"""The airlock's data path: the only way results leave a workspace.

A file travels: project storage --(confined open, streamed multipart upload)--> quarantine
bucket --(automated checks, two output checkers)--> egress bucket (server-side copy, verified
by re-hashing), with a release manifest written last as the commit marker --> a short-lived
presigned download link. A revoke removes the egress copies and records why.

Pure modules (no boto3, no Kubernetes): `keys` (where bytes live), `checks` (what reviewers
are shown); `paths` holds the one filesystem function. `quarantine`, `release` and
`datasets` do the S3 I/O through `provisioner.storage.s3`. The airlock service and the CLI
call these; nothing here knows about HTTP or JupyterHub.
"""
