"""U-Cloud TRE: approved data-access requests become isolated research workspaces."""

__version__ = "0.1.0"

# API group and version of our custom resources (Dataset, AccessRequest, Workspace).
API_GROUP = "tre.ucloud.org"
API_VERSION = "v1alpha1"
