"""The chart's values as one pydantic model: `values.yaml` (defaults, with each description as
a comment) and `values.schema.json` (every object closed with `additionalProperties: false`,
a description on every key) are both generated from it.

`settings` is derived from `provisioner.models.settings.Settings`: the same field names in
camelCase, the same types, defaults, bounds and descriptions, for the settings an operator
chooses. Each reaches the platform's pods as its TRE_* environment variable. The other
settings are fixed by the chart, because the chart decides them: the namespaces and
ServiceAccounts it installs, the ports its Services use, the files its Secrets are mounted
at, the resolver's address (`dns.serviceIp`). `FIXED_SETTINGS` are passed to every pod at
their default; `POD_SETTINGS` are set by the templates of the pods that need them;
`NOT_IN_CLUSTER` stay at their defaults or serve the local platform only.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from provisioner.models.rules import validate_s3_region
from provisioner.models.settings import Settings

_CLOSED = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

# Settings an operator sets through `settings:`. Everything else in Settings is fixed by the
# chart (FIXED_SETTINGS) or is a secret mounted from a Secret the operator creates.
OPERATOR_SETTINGS: Final = (
    "approver_group",
    "two_approver_tier",
    "output_checker_group",
    "export_reviewers_by_tier",
    "max_request_days",
    "max_open_requests",
    "max_export_requests",
    "forbid_inline_nfs",
    "psa_version",
    "hub_oidc_issuer",
    "hub_oidc_client_id",
    "hub_oidc_callback_url",
    "hub_oidc_username_claim",
    "hub_oidc_groups_claim",
    "hub_oidc_scopes",
    "hub_oidc_allowed_group",
    "hub_auth_refresh_seconds",
    "hub_idle_timeout_seconds",
    "hub_cull_every_seconds",
    "retention_days",
    "resync_seconds",
    "dataset_verify_seconds",
    "dataset_verify_max_objects",
    "dataset_verify_max_seconds",
    "project_storage_size",
    "project_storage_class",
    "s3_endpoint_url",
    "s3_region",
    "audit_bucket",
    "audit_bucket_owner",
    "audit_retention_days",
    "airlock_quarantine_bucket",
    "airlock_egress_bucket",
    "dataset_fingerprint_bucket",
    "airlock_max_file_bytes",
    "airlock_allowed_types",
    "airlock_small_count_threshold",
    "airlock_link_expiry_seconds",
    "airlock_body_timeout_seconds",
    "airlock_upload_idle_seconds",
    "airlock_upload_min_bytes_per_second",
    "airlock_upload_workers",
    "airlock_uploads_per_person",
    "airlock_calls_per_person",
    "airlock_exports_per_person_per_hour",
    "airlock_stall_seconds",
    "dataset_csi_driver",
    "browser_limits_by_tier",
)

# Chosen by the chart: the names it installs, the ports its Services use (Settings' defaults,
# which the generated templates use too).
FIXED_SETTINGS: Final = (
    "controller_user",
    "hub_namespace",
    "hub_service_account",
    "hub_api_port",
    "notebook_port",
    "notebook_server_port",
    "airlock_namespace",
    "airlock_port",
    "dns_namespace",
    "airlock_user",
)
# Set by the templates of the pods that need them (secrets mounted as files or variables).
POD_SETTINGS: Final = (
    "audit_signing_key_file",
    "hub_oidc_client_secret_file",
    "hub_crypt_key_file",  # the chart's Secret tre-hub-crypt-key, made once (hub.yaml)
    "s3_access_key_id",
    "s3_secret_access_key",
    "hub_proxy_api_url",
    "dns_resolver_ip",
    "hub_airlock_token_file",
    "kubeconfig",  # the airlock's: its in-cluster token as a kubeconfig (it impersonates)
)
# Their defaults are right in a pod (in-cluster credentials, the hub's own URLs), or they
# serve the local platform only (the development sign-in, a host outside the pod network).
NOT_IN_CLUSTER: Final = (
    "hub_bind_url",
    "hub_api_bind_url",
    "hub_connect_url",
    "hub_dev_authenticator",
    "hub_dev_password_file",
    "hub_dev_groups",
    "platform_host_ip",
    "airlock_url",  # names.airlock_url: the airlock Service, which the chart makes
)


def fixed_settings(settings: Settings) -> dict[str, str]:
    """FIXED_SETTINGS as environment values."""
    return {name: str(_plain(getattr(settings, name))) for name in FIXED_SETTINGS}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


# Where the chart mounts the Secrets the operator creates (read with read_secret_file, which
# refuses a file others may read: the volumes use defaultMode 0400).
SIGNING_KEY_PATH: Final = "/var/run/secrets/tre/audit/signing-key"
OIDC_SECRET_PATH: Final = "/var/run/secrets/tre/oidc/client-secret"  # noqa: S105 (a path)
AIRLOCK_TOKEN_PATH: Final = "/var/run/secrets/tre/airlock/token"  # noqa: S105 (a path)
HUB_CRYPT_KEY_PATH: Final = "/var/run/secrets/tre/hub-crypt/key"
AIRLOCK_COOKIE_PATH: Final = "/var/run/secrets/tre/airlock-cookie/secret"
AIRLOCK_KUBECONFIG_PATH: Final = "/etc/tre/kubeconfig"

# Group names are substituted into CEL and YAML strings of the generated policies; this
# pattern keeps quotes, backslashes and template braces out of them.
GROUP_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9:._@-]*$"
assert validate_s3_region.pattern is not None
S3_REGION_PATTERN: Final = validate_s3_region.pattern[0]
_STRICTER: Final[dict[str, FieldInfo]] = {
    "approver_group": Field(pattern=GROUP_PATTERN),
    "output_checker_group": Field(pattern=GROUP_PATTERN),
    # A mount option and an rclone flag value on every node (Settings checks it with the
    # domain rule, which JSON Schema cannot see): helm refuses a bad one before any pod does.
    "s3_region": Field(pattern=S3_REGION_PATTERN),
}


# A Service's fixed ClusterIP, or empty (then a template `fail`s where it is needed).
ServiceIp = Annotated[str, Field(pattern=r"^$|^[0-9]{1,3}(\.[0-9]{1,3}){3}$")]
# An IPv4 or IPv6 network in CIDR notation; never empty (an empty ipBlock is no address).
Cidr = Annotated[str, Field(pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")]
_LOW_BAND = (
    "Take a free address from the low band of the Service range (its first sixteenth, 16 to "
    "256 addresses), which the API server keeps for fixed addresses: it hands out random "
    "ones from the rest first, where a fixed one can collide with a Service made earlier."
)


def _settings_field(name: str) -> tuple[Any, FieldInfo]:
    field = Settings.model_fields[name]
    if name in _STRICTER:
        # The stricter constraint first: before a domain rule's validator, JSON Schema shows it.
        field = FieldInfo.merge_field_infos(_STRICTER[name], field)
    return field.annotation, field


ChartSettings: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "ChartSettings",
    __config__=_CLOSED,
    __doc__="Platform settings, passed to the controller, hub and airlock pods as their "
    "TRE_* environment variables (docs/cli.md lists them). approverGroup, "
    "outputCheckerGroup, maxRequestDays, maxOpenRequests, twoApproverTier, forbidInlineNfs and "
    "psaVersion also "
    "shape the admission policies, RBAC and namespaces the chart installs.",
    **{name: _settings_field(name) for name in OPERATOR_SETTINGS},
)


class Image(BaseModel):
    """A container image, by repository and tag, optionally pinned by digest."""

    model_config = _CLOSED
    repository: str = Field(min_length=1, description="Image repository (registry/path).")
    tag: str = Field(min_length=1, description="Image tag.")
    digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 digest; when set the image is pulled by digest (the tag is then "
        "only for people reading the manifest). Pin it in production.",
    )


class Images(BaseModel):
    """The platform's images; see images/ for how each is built."""

    model_config = _CLOSED
    tre: Image = Field(
        default=Image(repository="ucloud-tre/tre", tag="0.1.0"),
        description="The `tre` CLI: runs the controller (`tre controller run`) and the "
        "airlock (`tre airlock serve`).",
    )
    hub: Image = Field(
        default=Image(repository="ucloud-tre/hub", tag="0.1.0"),
        description="JupyterHub with KubeSpawner, jupyterhub-idle-culler and hub_config/.",
    )
    proxy: Image = Field(
        # The hub image carries the proxy (images/hub/Dockerfile), so one image serves both
        # Deployments and no third image has to be built, scanned and pinned.
        default=Image(repository="ucloud-tre/hub", tag="0.1.0"),
        description="configurable-http-proxy (the version of package-lock.json); by default "
        "the hub image, which carries it.",
    )
    dns: Image = Field(
        default=Image(repository="ucloud-tre/dns", tag="1.15.0"),
        description="CoreDNS built without the forward plugin "
        "(provisioner/devcluster/coredns/, images/dns/Dockerfile; tag = the CoreDNS release): "
        "the workspaces' resolver cannot recurse even if its Corefile were changed.",
    )
    pull_policy: str = Field(
        default="IfNotPresent",
        pattern=r"^(Always|IfNotPresent|Never)$",
        description="imagePullPolicy of every platform container.",
    )


class Resources(BaseModel):
    """CPU and memory of one container (requests = limits for memory: no overcommit)."""

    model_config = _CLOSED
    cpu: str = Field(default="100m", pattern=r"^[0-9]+m?$", description="CPU request.")
    cpu_limit: str = Field(default="1", pattern=r"^[0-9]+m?$", description="CPU limit.")
    memory: str = Field(
        default="256Mi",
        pattern=r"^[0-9]+(Mi|Gi)$",
        description="Memory request and limit.",
    )


class Controller(BaseModel):
    """The controller: reconciles workspaces, writes the audit log (leader-elected through its
    Lease in tre-system, so more replicas are standbys)."""

    model_config = _CLOSED
    replicas: int = Field(
        default=1, ge=1, le=3, description="Replicas; one holds the Lease, others wait."
    )
    audit_signing_key_secret: str = Field(
        default="",
        description="Name of a Secret in tre-system with key `signing-key`: the controller's "
        "Ed25519 audit signing key (`tre audit keygen`, docs/operations.md). Required.",
    )
    s3_credentials_secret: str = Field(
        default="",
        description="Name of a Secret in tre-system with keys `access-key-id` and "
        "`secret-access-key`: the controller's S3 credentials (audit bucket, dataset "
        "verification, writing the datasets' fingerprints). Empty: the pod's ambient "
        "credentials (e.g. IRSA).",
    )
    resources: Resources = Field(default=Resources(), description="Controller container.")


class Airlock(BaseModel):
    """The airlock service (`tre airlock serve`) in its own namespace tre-airlock."""

    model_config = _CLOSED
    enabled: bool = Field(default=True, description="Install the airlock service.")
    replicas: int = Field(default=1, ge=1, le=5, description="Replicas.")
    s3_credentials_secret: str = Field(
        default="",
        description="Name of a Secret in tre-airlock with keys `access-key-id` and "
        "`secret-access-key`: read and write the quarantine and egress buckets, read the "
        "fingerprint bucket, and nothing else, no dataset bucket (docs/operations.md, "
        "'The airlock's S3 key'). Empty: ambient credentials.",
    )
    service_ip: ServiceIp = Field(
        default="",
        description="Fixed ClusterIP of the airlock Service: the workspace resolver answers "
        f"its name with it. Required when dns.enabled. {_LOW_BAND}",
    )
    resources: Resources = Field(default=Resources(), description="Airlock container.")


class Hub(BaseModel):
    """JupyterHub with KubeSpawner (hub_config/), its configurable-http-proxy and the idle
    culler (a hub-managed service inside the hub pod)."""

    model_config = _CLOSED
    enabled: bool = Field(default=True, description="Install the hub and its proxy.")
    oidc_client_secret_secret: str = Field(
        default="",
        description="Name of a Secret in tre-hub with key `client-secret`: the hub's OIDC "
        "client secret. Required when hub.enabled.",
    )
    evaluation_password_secret: str = Field(
        default="",
        description="EVALUATION CLUSTERS ONLY, never with real data: name of a Secret in "
        "tre-hub with key `password`, one password every user signs in with, instead of OIDC "
        "(JupyterHub's SharedPasswordAuthenticator; anyone who knows it can be anyone). Set it "
        "without any hubOidc* setting (the chart and the hub refuse both); `tre check` fails "
        "while it is set. For trying the chart on a test cluster without an identity provider.",
    )
    config_file: str = Field(
        default="/opt/ucloud-tre/hub_config/jupyterhub_config.py",
        pattern=r"^/",
        description="Path of hub_config/jupyterhub_config.py inside the hub image.",
    )
    database_size: str = Field(
        default="1Gi",
        pattern=r"^[1-9][0-9]*(Mi|Gi)$",
        description="Size of the hub's sqlite volume (users, servers, tokens).",
    )
    storage_class: str | None = Field(
        default=None, description="StorageClass of the hub's volume. None: cluster default."
    )
    service_ip: ServiceIp = Field(
        default="",
        description="Fixed ClusterIP of the hub's API Service (`hub`): the workspace "
        f"resolver answers its name with it. Required when dns.enabled. {_LOW_BAND}",
    )
    proxy_service_type: str = Field(
        default="ClusterIP",
        pattern=r"^(ClusterIP|LoadBalancer|NodePort)$",
        description="Type of the proxy's public Service (people's browsers reach it, "
        "usually through an Ingress or a load balancer terminating TLS).",
    )
    resources: Resources = Field(default=Resources(memory="512Mi"), description="Hub container.")
    proxy_resources: Resources = Field(default=Resources(), description="Proxy container.")


class Dns(BaseModel):
    """The workspaces' resolver: answers the hub's and the airlock's names and NXDOMAIN for
    every other name; it never forwards (docs/architecture.md, DNS)."""

    model_config = _CLOSED
    enabled: bool = Field(default=True, description="Install the workspace resolver.")
    replicas: int = Field(default=2, ge=1, le=5, description="Replicas.")
    service_ip: ServiceIp = Field(
        default="",
        description="Fixed ClusterIP of the resolver's Service: notebooks get it as their "
        f"only nameserver (TRE_DNS_RESOLVER_IP). Required when dns.enabled. {_LOW_BAND}",
    )
    resources: Resources = Field(
        default=Resources(memory="64Mi"), description="Resolver container."
    )


class NetworkPolicies(BaseModel):
    """NetworkPolicies of the platform's own namespaces (tre-system, tre-hub, tre-airlock):
    deny by default, then each allowed arrow. The workspaces' own policies are the
    controller's, not the chart's."""

    model_config = _CLOSED
    enabled: bool = Field(default=True, description="Install them (needs an enforcing CNI).")
    # No default for the egress destinations: 0.0.0.0/0 on 443 would let a compromised
    # controller, hub or airlock send data anywhere (review 3, S14). An empty list is refused
    # by the chart (`tre.validate`), never rendered: a NetworkPolicy rule with no peer allows
    # every destination.
    api_server_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Required. Where the controller, hub and airlock may reach the API server: "
        "its addresses (e.g. [10.0.0.10/32]; `kubectl get endpoints kubernetes`).",
    )
    api_server_ports: list[int] = Field(
        default_factory=lambda: [443, 6443],
        min_length=1,
        description="TCP ports of the API server as pods reach it.",
    )
    s3_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Required. Where the controller and airlock may reach S3 (TCP 443 and 80): "
        "the addresses of your S3 endpoint (settings.s3EndpointUrl), or of the region's S3 "
        "prefix list (AWS publishes it) or VPC endpoint. Nothing else: the airlock is reached "
        "by every notebook and person, and its S3 egress is where a flaw in it would send "
        "data.",
    )
    oidc_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Required with the hub signing in by OIDC. Where the hub may reach the "
        "identity provider (TCP 443).",
    )
    proxy_ingress_cidrs: list[Cidr] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        min_length=1,
        description="Who may reach the proxy's public port (people's browsers, or your "
        "ingress controller's addresses).",
    )


class PodDisruptionBudgets(BaseModel):
    """PodDisruptionBudgets, so a node drain keeps the platform answering."""

    model_config = _CLOSED
    enabled: bool = Field(default=True, description="Install them.")


class ChartValues(BaseModel):
    """Values of the ucloud-tre chart."""

    model_config = _CLOSED
    images: Images = Field(default=Images(), description="Container images.")
    settings: ChartSettings = Field(
        default_factory=ChartSettings,
        description="The platform's TRE_* settings (docs/cli.md); some also shape the "
        "installed admission policies, RBAC and namespaces.",
    )
    controller: Controller = Field(default=Controller(), description=Controller.__doc__)
    airlock: Airlock = Field(default=Airlock(), description=Airlock.__doc__)
    hub: Hub = Field(default=Hub(), description=Hub.__doc__)
    dns: Dns = Field(default=Dns(), description=Dns.__doc__)
    network_policies: NetworkPolicies = Field(
        default=NetworkPolicies(), description=NetworkPolicies.__doc__
    )
    pod_disruption_budgets: PodDisruptionBudgets = Field(
        default=PodDisruptionBudgets(), description=PodDisruptionBudgets.__doc__
    )


def values_schema() -> dict[str, Any]:
    """values.schema.json: the model's JSON schema, by alias (camelCase)."""
    schema = ChartValues.model_json_schema(by_alias=True, mode="validation")
    # pydantic leaves out a field's description where it equals its model's docstring; a
    # reader of the schema (or an editor showing it) should not have to follow the $ref.
    defs = schema.get("$defs", {})
    for obj in [schema, *defs.values()]:
        for prop in obj.get("properties", {}).values():
            ref = prop.get("$ref", "").removeprefix("#/$defs/")
            if ref and "description" not in prop and "description" in defs[ref]:
                prop["description"] = defs[ref]["description"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def default_values() -> dict[str, Any]:
    return ChartValues().model_dump(by_alias=True, mode="json")
