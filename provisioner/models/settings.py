"""Platform settings, from `TRE_*` environment variables (or constructed directly in tests).

Every field says its unit, its default and why. Secrets are `SecretStr` so they never show up
in a log line or a traceback.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioner.models.rules import S3_ENDPOINT_PATTERN
from provisioner.models.types import (
    BUCKET_NAME_PATTERN,
    EXPORT_FILE_TYPES,
    ClassificationTier,
    DatasetCsiDriver,
    S3Region,
)

MIB: Final = 1 << 20


class BrowserLimits(BaseModel):
    """One tier's limits on what reaches a browser from a workspace (the browser gate)."""

    # camelCase like every other key of the chart's values (readCapMib in TRE_* JSON too).
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    read_cap_mib: int = Field(
        ge=0,
        le=1024,
        description="MiB. The largest file or notebook the Contents API may send to the "
        "browser; larger ones are refused (they are still usable in notebooks).",
    )
    upload_cap_mib: int = Field(
        ge=0,
        le=4096,
        description="MiB. The largest file a person may upload from the browser.",
    )
    content_budget_mib: int = Field(
        ge=0,
        description="MiB a day. File content and kernel and terminal output sent to the "
        "browser; past it, reads are refused and output is cut with a message.",
    )
    other_budget_mib: int = Field(
        ge=0,
        description="MiB a day. Everything else the browser receives (the JupyterLab "
        "application, listings, settings), so that no route is unmetered.",
    )


# Sized for a working day of notebooks, plots and tables: a JupyterLab load is about 10 MiB of
# application; a plot about 0.1 MiB of output.
DEFAULT_BROWSER_LIMITS: Final = {
    ClassificationTier.PUBLIC: BrowserLimits(
        read_cap_mib=16, upload_cap_mib=64, content_budget_mib=1024, other_budget_mib=2048
    ),
    ClassificationTier.INTERNAL: BrowserLimits(
        read_cap_mib=8, upload_cap_mib=32, content_budget_mib=256, other_budget_mib=1024
    ),
    ClassificationTier.CONFIDENTIAL: BrowserLimits(
        read_cap_mib=4, upload_cap_mib=16, content_budget_mib=64, other_budget_mib=512
    ),
    ClassificationTier.SENSITIVE: BrowserLimits(
        read_cap_mib=2, upload_cap_mib=8, content_budget_mib=32, other_budget_mib=256
    ),
}


class Settings(BaseSettings):
    @field_validator("project_storage_size")
    @classmethod
    def _canonical_quantity(cls, value: str) -> str:
        number, unit = int(value[:-2]), value[-2:]
        bigger = {"Mi": "Gi", "Gi": "Ti"}.get(unit)
        if bigger and number % 1024 == 0:
            raise ValueError(
                f"write {number // 1024}{bigger} instead of {value}: the API server stores "
                "the canonical form"
            )
        return value

    @field_validator("airlock_allowed_types")
    @classmethod
    def _known_export_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EXPORT_FILE_TYPES))
        if unknown:
            raise ValueError(
                f"unknown type(s) {unknown}: the airlock checks only "
                f"{', '.join(EXPORT_FILE_TYPES)} (lower case, no dot)"
            )
        return sorted(set(value))

    @field_validator("browser_limits_by_tier")
    @classmethod
    def _every_tier_limited(
        cls, value: dict[ClassificationTier, BrowserLimits]
    ) -> dict[ClassificationTier, BrowserLimits]:
        missing = [tier.value for tier in ClassificationTier if tier not in value]
        if missing:
            raise ValueError(
                f"no browser limits for tier(s) {missing}: list every tier (a workspace of an "
                "unlisted tier would have no limits)"
            )
        return value

    @model_validator(mode="after")
    def _gate_in_front(self) -> Self:
        if self.notebook_server_port == self.notebook_port:
            raise ValueError(
                f"notebook_server_port: must differ from notebook_port ({self.notebook_port}), "
                "the browser gate's port in front of the Jupyter server"
            )
        return self

    @property
    def platform_buckets(self) -> list[str]:
        """Every bucket the platform keeps for itself (every `*_bucket` setting: audit log,
        quarantine, egress, and any added later), sorted. None may be a dataset source
        (admission policy `tre-dataset-not-platform-bucket`, `tre dataset register`): the
        quarantine holds every project's unreviewed files, and a dataset mounts a bucket with
        the node plugin's credentials, not the person's."""
        return sorted(
            {getattr(self, name) for name in type(self).model_fields if name.endswith("_bucket")}
        )

    @model_validator(mode="after")
    def _separate_service_identities(self) -> Self:
        # Each service's reach is granted to its identity: one identity for two services
        # would give the airlock the controller's writes (or the reverse) and make the
        # admission rules that tell them apart meaningless.
        if self.airlock_user == self.controller_user:
            raise ValueError(
                f"airlock_user: must differ from controller_user ({self.controller_user!r}); "
                "give the airlock an identity of its own (default "
                "system:serviceaccount:tre-airlock:tre-airlock)"
            )
        return self

    @field_validator("output_checker_group")
    @classmethod
    def _checker_group_is_not_a_system_group(cls, value: str) -> str:
        # The airlock may impersonate exactly this group; a 'system:' group (system:masters,
        # system:nodes, ...) would turn that into the cluster's own powers.
        if value.startswith("system:") or not value:
            raise ValueError(
                f"must be a group of people, not {value!r}: the airlock impersonates it for "
                "output checkers, so a 'system:' group is refused; use e.g. tre:output-checkers"
            )
        return value

    @model_validator(mode="after")
    def _separate_airlock_buckets(self) -> Self:
        if self.airlock_quarantine_bucket == self.airlock_egress_bucket:
            raise ValueError(
                "airlock_egress_bucket: must differ from airlock_quarantine_bucket "
                f"({self.airlock_quarantine_bucket!r}): unreviewed files must never be "
                "downloadable from where released ones are"
            )
        return self

    @model_validator(mode="after")
    def _dataset_driver_has_its_endpoint(self) -> Self:
        # k8s-csi-s3 builds its S3 client from the endpoint before it mounts anything and has
        # no AWS default: without one every dataset mount would fail on the node, later and
        # further from the cause than here.
        if self.dataset_csi_driver is DatasetCsiDriver.K8S_CSI_S3 and not self.s3_endpoint_url:
            raise ValueError(
                f"dataset_csi_driver {self.dataset_csi_driver.value} needs s3_endpoint_url: "
                "set TRE_S3_ENDPOINT_URL to the S3 endpoint the nodes reach (for AWS, "
                "https://s3.<region>.amazonaws.com)"
            )
        return self

    model_config = SettingsConfigDict(env_prefix="TRE_", extra="ignore", frozen=True)

    # --- Kubernetes -------------------------------------------------------------------------
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file. Default: $KUBECONFIG (its first file), then "
        "~/.kube/config, then in-cluster credentials.",
    )

    controller_user: str = Field(
        default="system:serviceaccount:tre-system:tre-controller",
        description="The identity the controller acts as. Only it may write Workspaces "
        "(admission policy); in a cluster it is the controller's ServiceAccount, locally "
        "`tre controller run --as <this>` impersonates it.",
    )
    airlock_user: str = Field(
        default="system:serviceaccount:tre-airlock:tre-airlock",
        description="The identity the airlock service acts as. Only it may write an export's "
        "release, revocation and access records (admission policy); it reads exports, "
        "workspaces, datasets and access requests, and files, reviews and withdraws exports "
        "only by impersonating the person who acts (constrained impersonation: users, the "
        "output checker group, and only to create, update or patch ExportRequests). In a "
        "cluster it is the airlock's ServiceAccount in airlock_namespace; locally `tre dev up` "
        "writes a kubeconfig with its token (<state>/airlock/kubeconfig).",
    )

    # --- Approval rules (mirrored by the ValidatingAdmissionPolicies) -----------------------
    approver_group: str = Field(
        default="tre:approvers",
        description="Kubernetes group whose members may approve, reject, revoke and extend "
        "access requests (the data-access committee).",
    )
    two_approver_tier: ClassificationTier = Field(
        default=ClassificationTier.CONFIDENTIAL,
        description="Requests for a dataset at or above this tier need two distinct "
        "approvers (four eyes).",
    )
    output_checker_group: str = Field(
        default="tre:output-checkers",
        description="Kubernetes group whose members review export requests (output "
        "checkers). A checker never reviews an export of a project they are a member of.",
    )
    export_reviewers_by_tier: dict[ClassificationTier, int] = Field(
        default_factory=lambda: {tier: 2 for tier in ClassificationTier},
        description="Distinct output checkers an export needs, by the highest classification "
        "of the datasets in its workspace; never fewer than 2 (two independent reviews).",
    )
    max_request_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="Days. Longest allowed span from startDate to endDate of one request; "
        "longer projects ask for an extension, which is reviewed again.",
    )
    max_export_requests: int = Field(
        default=1000,
        ge=1,
        le=100000,
        description="ExportRequests one project may file in its life (ResourceQuota "
        "count/exportrequests.tre.ucloud.org in its namespace): exports are never deleted, "
        "and each costs output checkers' attention and audit entries.",
    )
    max_open_requests: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Access requests one person may have awaiting a decision (phase Pending) "
        "at once; a further one is refused by the API server when filed (each filing costs "
        "approvers' attention and an audit entry that is never deleted).",
    )

    # --- Where the hub and the airlock run (NetworkPolicy peers, RoleBinding subject) -------
    hub_namespace: str = Field(default="tre-hub", description="Namespace of JupyterHub.")
    hub_service_account: str = Field(
        default="hub", description="ServiceAccount that KubeSpawner uses to create pods."
    )
    hub_api_port: int = Field(default=8081, description="TCP port of the hub's API.")
    notebook_port: int = Field(
        default=8888,
        description="TCP port of a notebook pod that the hub and the proxy reach: the "
        "browser gate's, which is the only way to the notebook server (images/gate).",
    )
    notebook_server_port: int = Field(
        default=8890,
        description="TCP port the Jupyter server listens on inside the notebook pod, on the "
        "pod's loopback address only, so that nothing but the gate beside it reaches it.",
    )
    browser_limits_by_tier: dict[ClassificationTier, BrowserLimits] = Field(
        default_factory=lambda: dict(DEFAULT_BROWSER_LIMITS),
        description="What the browser gate of a notebook lets reach a person's browser, by the "
        "highest classification of the workspace's datasets: the largest file opened in "
        "JupyterLab, the largest file uploaded, and the daily budgets (UTC days, per person "
        "and workspace) for file content plus output, and for all other traffic. Every "
        "tier must be listed; the highest tiers are the strictest by default.",
    )
    airlock_namespace: str = Field(
        default="tre-airlock",
        description="Namespace of the airlock service: its own, apart from the controller's, "
        "so that whoever can run pods for the airlock gets nothing of the controller's.",
    )
    forbid_inline_nfs: bool = Field(
        default=True,
        description="Refuse, cluster-wide, pods that mount an NFS export directly (admission "
        "policy tre-no-inline-nfs): a namespace with a looser Pod Security level could "
        "otherwise mount a dataset's export by server and path, bypassing every approval. "
        "Turn off only where other workloads need inline NFS.",
    )
    airlock_port: int = Field(default=8080, description="TCP port of the airlock service.")
    dns_resolver_ip: IPv4Address | None = Field(
        default=None,
        description="Address of the platform's own DNS resolver, the only nameserver of "
        "notebooks (dnsPolicy None): it answers the names the platform serves (the hub, the "
        "airlock) and never forwards a query, so DNS cannot carry data out. In a cluster, "
        "the ClusterIP of a CoreDNS with the kubernetes plugin and no forward plugin (pods "
        "labelled app.kubernetes.io/name=tre-dns in dns_namespace); locally, the node's "
        "resolver. Unset: notebooks get no nameserver and no DNS traffic is allowed.",
    )
    dns_namespace: str = Field(
        default="tre-system",
        description="Namespace of the platform's resolver pods (NetworkPolicy peer).",
    )
    platform_host_ip: IPv4Address | None = Field(
        default=None,
        description="Set only when the hub, its proxy, the airlock and the DNS resolver run "
        "on one host outside the pod network (the local development node): the project "
        "NetworkPolicies then admit exactly this address (a /32) instead of those pods.",
    )

    # --- JupyterHub: where it listens, how pods reach it, who signs in, idle culling --------
    # The hub process reads these (hub_config/jupyterhub_config.py); `tre dev up` sets the
    # URLs for a hub on 127.0.0.1. Defaults are those of a hub pod in `hub_namespace`.
    hub_bind_url: str = Field(
        default="http://:8000",
        pattern=r"^https?://",
        description="Where the proxy listens for people's browsers (JupyterHub.bind_url; an "
        "empty host means every interface of the hub's pod).",
    )
    hub_api_bind_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Where the hub's own API listens (JupyterHub.hub_bind_url). None: every "
        "interface of the hub's pod on `hub_api_port`, the port the project NetworkPolicies "
        "open from notebooks.",
    )
    hub_connect_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The URL notebook pods call the hub API at (JupyterHub.hub_connect_url). "
        "None: the zero-to-jupyterhub Service's cluster DNS name, "
        "http://hub.<hub_namespace>.svc.cluster.local:<hub_api_port> (notebooks run in other "
        "namespaces, where the short name does not resolve).",
    )
    hub_proxy_api_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="REST API of a configurable-http-proxy started apart from the hub (as "
        "zero-to-jupyterhub and `tre dev up` do), which shares CONFIGPROXY_AUTH_TOKEN with "
        "it. None: the hub starts the proxy itself.",
    )
    hub_dev_authenticator: bool = Field(
        default=False,
        description="Local development only: sign in with any user name and the shared "
        "password in `hub_dev_password_file` (JupyterHub's SharedPasswordAuthenticator). The "
        "hub refuses to start with it when any `hub_oidc_*` setting is present, so a "
        "deployment cannot fall back to it by accident.",
    )
    hub_dev_password_file: Path | None = Field(
        default=None,
        description="File holding the development authenticator's shared password (at least "
        "8 characters; mode 0600 or 0400). `tre dev up` generates one in its state directory.",
    )
    hub_dev_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Local development only (with hub_dev_authenticator): hub groups and their "
        'members, created at the hub\'s start, e.g. {"tre:output-checkers": ["olga"]}. '
        "With OIDC, groups come from the identity provider's groups claim at every sign-in.",
    )
    hub_airlock_token_file: Path | None = Field(
        default=None,
        description="File with the API token the hub and the airlock service share (mode 0600 "
        "or 0400; at least 32 characters). Set: the hub registers the airlock as its service "
        "`airlock` (sign-in by OAuth, served under /services/airlock/), lets every user and "
        "every notebook's token reach it, and tells notebooks where it is (TRE_AIRLOCK_URL). "
        "Unset: no airlock.",
    )
    hub_oidc_issuer: str | None = Field(
        default=None,
        pattern=r"^https://[^/?#]+",
        description="OIDC issuer URL of the institution's identity provider; the hub reads "
        "its endpoints from <issuer>/.well-known/openid-configuration at start and refuses "
        "to start when that document names another issuer.",
    )
    hub_oidc_client_id: str | None = Field(
        default=None, description="OIDC client id registered for the hub."
    )
    hub_oidc_client_secret_file: Path | None = Field(
        default=None,
        description="File holding the hub's OIDC client secret (mode 0600 or 0400; a "
        "mounted Secret in a cluster).",
    )
    hub_oidc_callback_url: str | None = Field(
        default=None,
        pattern=r"^https://",
        description="The redirect URI registered with the identity provider, "
        "https://<hub host>/hub/oauth_callback.",
    )
    hub_oidc_username_claim: str = Field(
        default="sub",
        min_length=1,
        description="Claim whose value is the person's platform user name: their JupyterHub "
        "name and the Kubernetes user name that access requests list (hub_config.identity). "
        "It must be unique and immutable in the identity provider: an account must never be "
        "able to take another's value, nor to change its own. `sub` is both by the OIDC "
        "standard (Keycloak: a UUID, which fits the user name rule); a managed claim such as "
        "an LDAP `uid` mapped by the provider is readable and as safe when people cannot edit "
        "it. `preferred_username` and `email` are not safe where people choose or edit them "
        "(OIDC: 'MUST NOT rely upon this value being unique'). A value outside the user name "
        "rule (lower case a-z, 0-9, '.', '_', '@', '-') is refused at sign-in, never "
        "rewritten.",
    )
    hub_oidc_groups_claim: str = Field(
        default="groups", min_length=1, description="Claim holding the user's groups."
    )
    hub_oidc_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email", "groups"],
        min_length=1,
        description="Scopes the hub asks the identity provider for; they must release the "
        "username and groups claims (a JSON list in the environment). Many providers "
        "release groups under a `groups` scope; others map them into the default scopes and "
        "refuse an unknown one.",
    )
    hub_oidc_allowed_group: str | None = Field(
        default=None,
        description="Only members of this group (in `hub_oidc_groups_claim`) may sign in. "
        "Required with OIDC: without it every account of the identity provider could.",
    )
    hub_auth_refresh_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Seconds. With OIDC, the hub asks the identity provider again for a "
        "person's groups when what it knows is older than this (at their next request to the "
        "hub or the airlock) and always right before it starts a server, so a person removed "
        "from a group (output checkers, the allowed group) loses it within this time, not at "
        "their next sign-in. Each refresh is one userinfo call to the provider.",
    )
    hub_crypt_key_file: Path | None = Field(
        default=None,
        description="File holding the key the hub encrypts its auth state with (the identity "
        "provider's tokens, which it needs to refresh groups): 64 hex characters (`openssl "
        "rand -hex 32`), mode 0600 or 0400. Required with OIDC. The chart makes one and keeps "
        "it across upgrades; a new key only makes people sign in again.",
    )
    hub_idle_timeout_seconds: int = Field(
        default=3600,
        ge=300,
        description="Seconds. jupyterhub-idle-culler stops a notebook server idle this "
        "long, so an idle server does not hold the project's quota and data mounts.",
    )
    hub_cull_every_seconds: int = Field(
        default=300,
        ge=30,
        description="Seconds between the idle culler's checks; a server is stopped up to "
        "this long after it passed the timeout.",
    )
    psa_version: str = Field(
        default="v1.36",
        pattern=r"^v1\.\d+$",
        description="Pinned Pod Security Standards version, so a cluster upgrade cannot "
        "silently change what 'restricted' means for existing workspaces.",
    )

    # --- Lifecycle --------------------------------------------------------------------------
    retention_days: int = Field(
        default=30,
        ge=0,
        description="Days a Frozen workspace keeps its project storage before teardown.",
    )
    resync_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Seconds. Every workspace is reconciled at least this often, which "
        "repairs drift (for example a NetworkPolicy deleted by hand).",
    )
    dataset_verify_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds. The controller re-lists each dataset's data and recomputes "
        "its manifest at least this often (and at once for a new dataset), so data changed "
        "in storage after approval is withheld from workspaces within this time. Each "
        "verification lists every object of the dataset: shorter costs more S3 requests.",
    )
    dataset_verify_max_objects: int = Field(
        default=1_000_000,
        ge=1,
        description="The most objects the controller lists to verify one dataset. A dataset "
        "with more gets Verified=False naming this setting and is withheld from workspaces. "
        "The controller's memory does not grow with it (past 20,000 objects the listing is "
        "sorted in runs on disk, about 100 bytes per object); the time a verification "
        "takes does.",
    )
    dataset_verify_max_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Seconds. The longest the controller lists one dataset's data; past it "
        "(checked after each page of 1,000 objects) the dataset gets Verified=False naming "
        "this setting and is withheld from workspaces. Verification runs beside the "
        "reconcile loop, so revocations and expiry never wait for it.",
    )
    project_storage_size: str = Field(
        default="10Gi",
        pattern=r"^[1-9][0-9]*(Mi|Gi|Ti)$",
        description="Size of each project's shared /project volume, in the API server's "
        "canonical form (e.g. 10Gi, not 10240Mi): the server rewrites other spellings, and a "
        "value that never reads back as written would be re-applied on every resync.",
    )
    project_storage_class: str | None = Field(
        default=None, description="StorageClass of project storage. None: cluster default."
    )

    # --- S3 -----------------------------------------------------------------------------------
    s3_endpoint_url: str | None = Field(
        default=None,
        # It becomes a mount option of the S3 CSI driver (which runs as root): one word.
        pattern=S3_ENDPOINT_PATTERN,
        description="S3 endpoint, an http(s) URL without spaces or commas. None: the AWS "
        "default for the region. Every dataset is mounted and verified from this endpoint "
        "(never one a dataset names), and it is part of each dataset's manifest hash: "
        "changing it withholds every S3 dataset until approvers approve it again.",
    )
    s3_region: S3Region = Field(
        default="us-east-1",
        description="S3 region: of the platform's buckets, and of every dataset that names "
        "none. Part of those datasets' manifest hash.",
    )
    dataset_csi_driver: DatasetCsiDriver = Field(
        default=DatasetCsiDriver.MOUNTPOINT_S3,
        description="CSI driver that mounts S3 datasets on the nodes (its CSI name). The "
        "dataset PVs are written for it (volume attributes, mount options, the endpoint "
        "`s3_endpoint_url`), and the controller may write PVs of this driver only (admission "
        "policy `tre-controller-scope`). `s3.csi.aws.com`: Mountpoint for S3, the usual "
        "driver of a managed cluster; `ru.yandex.s3.csi`: k8s-csi-s3 mounting with rclone, "
        "which the local dev node runs. Either way the node plugin reads S3 with its own read-only "
        "credentials; a PV never names credentials.",
    )
    s3_access_key_id: SecretStr | None = Field(default=None, description="S3 access key.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    audit_bucket: str = Field(
        default="tre-audit",
        pattern=BUCKET_NAME_PATTERN,
        description="Bucket of the hash-chained audit log.",
    )
    audit_bucket_owner: str | None = Field(
        default=None,
        pattern=r"^[0-9]{12}$",
        description="Account ID (12 digits) that must own the audit bucket. Set: every S3 "
        "call on the audit bucket states it (ExpectedBucketOwner), so a server that checks "
        "it refuses the call, and nothing is written or believed, when the bucket of that "
        "name belongs to another account (re-created elsewhere, a typo in another tenant). "
        "None: not stated. The local S3 server does not check it (docs/operations.md).",
    )
    audit_retention_days: int = Field(
        default=3650,
        ge=0,
        description="Days. Each audit entry is locked (S3 object lock, COMPLIANCE mode) this "
        "long where the bucket supports it, so nobody, admins included, can delete or "
        "overwrite it. 0 writes entries without a lock. Above 0, a bucket without object "
        "lock is refused (by `tre install` and when the controller opens the log), never "
        "silently written unlocked.",
    )
    # --- Airlock (provisioner/airlock/) -------------------------------------------------------
    airlock_quarantine_bucket: str = Field(
        default="tre-quarantine",
        pattern=BUCKET_NAME_PATTERN,
        description="Bucket that receives every file submitted for export, before any review. "
        "Only the airlock writes it; output checkers read it through the airlock, never "
        "directly. Keys: exports/<project>/<request>/<uid>/files/<path>.",
    )
    airlock_egress_bucket: str = Field(
        default="tre-egress",
        pattern=BUCKET_NAME_PATTERN,
        description="Bucket of released files, each under the same key as in quarantine, "
        "with the release manifest (release.json) beside them and, after a revoke, the "
        "revocation record (revocation.json). Project leads download through presigned links "
        "only. Must differ from the quarantine bucket.",
    )
    dataset_fingerprint_bucket: str = Field(
        default="tre-dataset-fingerprints",
        pattern=BUCKET_NAME_PATTERN,
        description="Bucket of each verified dataset's per-object size and ETag "
        "(`storage.fingerprints`): the controller writes it when it lists a dataset, the "
        "airlock reads it for the raw-copy check, so the airlock needs no read on any dataset "
        "bucket. Keys: manifests/<manifest sha256>.jsonl.",
    )
    airlock_max_file_bytes: int = Field(
        default=1 << 30,
        ge=1,
        le=5 << 30,
        description="Bytes. Largest file one export may carry (default 1 GiB). Results are "
        "aggregates; a bigger file is more likely row-level data. At most 5 GiB: a release "
        "copies each file with one server-side CopyObject, which S3 limits to 5 GiB.",
    )
    airlock_allowed_types: list[str] = Field(
        default_factory=lambda: ["csv", "tsv", "txt", "png", "pdf", "json", "ipynb", "md"],
        min_length=1,
        description="File extensions (lower case, no dot; a JSON list in the environment, "
        'e.g. ["csv","png"]) an export may carry, from '
        "csv, tsv, txt, md, log, py, r, sql, json, ipynb, png, pdf: each is checked by "
        "extension and by content (text types must be UTF-8 text, PNG and PDF must carry "
        "their magic numbers), so only types the airlock knows how to sniff can be allowed.",
    )
    airlock_small_count_threshold: int = Field(
        default=10,
        ge=2,
        le=1000,
        description="Counts from 1 to this minus 1 in count-like CSV/TSV columns are flagged "
        "to the reviewers as small-number disclosure risks (a finding, never a refusal). 10 "
        "follows common statistical disclosure control guidance; use your data provider's.",
    )
    airlock_link_expiry_seconds: int = Field(
        default=900,
        ge=1,
        le=604800,
        description="Seconds a presigned download link of a released file stays valid "
        "(default 15 minutes; at most 7 days, the S3 signature limit). Short, so a link "
        "forwarded or left in a browser history stops working; the lead asks for a new one.",
    )
    # --- Airlock serving limits (S10, F20): no one person can stall everyone -----------------
    airlock_body_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds. A request's headers, and the whole body of every request but an "
        "upload (JSON and forms, at most 1 MiB), must arrive within this; a connection that "
        "sends slower is closed, so a client that opens connections and sends nothing holds "
        "nothing for long.",
    )
    airlock_upload_idle_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds. An upload that sends no byte for this long is cut (send the file "
        "again); also the longest an upload worker waits for the client's next bytes.",
    )
    airlock_upload_min_bytes_per_second: int = Field(
        default=64 << 10,
        ge=1,
        description="Bytes per second. An upload's whole body must arrive within "
        "airlock_upload_idle_seconds + size / this (default 64 KiB/s: 1 GiB within 4.6 hours); "
        "slower, the connection is closed and nothing is kept.",
    )
    airlock_upload_workers: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Uploads the airlock streams into quarantine at once, on workers of their "
        "own: listing, viewing, reviewing, releasing, downloading and revoking never wait "
        "behind uploads. An upload beyond them is answered 503 (try again).",
    )
    airlock_uploads_per_person: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Uploads one person may have in progress at once; one more is answered 429 "
        "with the reason, so no one person takes every upload worker.",
    )
    airlock_calls_per_person: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Actions (list, view, review, release, download, revoke) one person may "
        "have running at once; one more is answered 429. Each action holds one of the "
        "airlock's 16 workers (revokes: 4 workers of their own) while it runs.",
    )
    airlock_exports_per_person_per_hour: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="Exports one person may file through the airlock in any hour (per airlock "
        "replica); one more is answered 429 with the time until the next may be filed.",
    )
    airlock_stall_seconds: int = Field(
        default=10,
        ge=1,
        le=600,
        description="Seconds. /health answers 503 (not ready; restarted if it lasts) when a "
        "no-op task given to the action or revoke workers has not run within this, or when "
        "every upload worker is busy and none has moved a byte within this plus "
        "airlock_upload_idle_seconds.",
    )
    airlock_url: str | None = Field(
        default=None,
        description="Where notebooks and `tre export` reach the airlock's API, with its "
        "JupyterHub service prefix. Default: the airlock Service in airlock_namespace on "
        "airlock_port, under /services/airlock/ (`names.airlock_url`). The hub passes it "
        "to every notebook as TRE_AIRLOCK_URL.",
    )

    audit_signing_key_file: Path | None = Field(
        default=None,
        description="File with the controller's Ed25519 audit signing key (PEM PKCS#8, 32 raw "
        "bytes, or their base64), mode 0600 or 0400. Only the controller needs it and only "
        "the controller's pod should mount it (a Secret): every audit entry is signed with it, "
        "so an entry written by anyone else who can write the bucket is reported as forged. "
        "None: this process cannot write the audit log (readers, people's CLI).",
    )
