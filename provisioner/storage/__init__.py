"""The S3 edge: boto3 clients, buckets, dataset manifests and conditional writes.

Every botocore error leaves this package as one of ours (`provisioner.errors`), chained with
``from exc``, so callers above it never import botocore.
"""
