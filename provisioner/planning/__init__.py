"""Pure planning: typed models in, Kubernetes manifests (plain dicts) out.

No Kubernetes client, no boto3, no I/O: `provisioner.kube` applies what this package plans.
"""
