"""The hub configuration and the spawn decision (security invariants 2 and 4).

Behaviours under test:
- apply_config, on a bare traitlets Config, sets KubeSpawner as the spawner class, named
  servers, no per-user namespaces and a fail-closed fallback namespace, the hub's FQDN for
  notebooks in other namespaces, the PSA `restricted` security contexts (uid 1000, gid 100,
  runAsNonRoot, no privilege escalation, capabilities drop ALL, seccomp RuntimeDefault), no
  ServiceAccount token, no hub-provisioned claims, the NetworkPolicy label, no user config;
- every key apply_config sets is a configurable trait of KubeSpawner or JupyterHub in the
  installed versions (a misspelt trait would be silently ignored by traitlets);
- apply_config is deterministic and touches only the JupyterHub and KubeSpawner sections;
- profiles_for offers exactly the Ready workspaces that list the user, sorted, the first one
  default, each overriding namespace (derived from the project), volumes and mounts, with every
  dataset read-only in the volume and the mount and /project writable;
- choose_workspace returns the server's workspace, or refuses each case with its exact message:
  default server, no such project, Frozen, TornDown, Provisioning, not a member, inconsistent
  Workspace, a namespace the hub must not spawn into; the refusal is a PermanentError whose
  `jupyterhub_message` JupyterHub shows on the spawn page;
- the profile_list glue reads Workspaces through the injected reader on every call, so a
  workspace frozen between two starts is refused on the second;
- a real KubeSpawner 7.1.0 accepts the config: its profile step moves the server into the
  project namespace, and get_pod_manifest() yields a pod that passes PSA `restricted`
  (checked rule by rule below, independently of our config), mounts the datasets read-only and
  mounts no token; the same check fails for KubeSpawner's defaults, so it is not vacuous;
- KubeSpawner rejects a `profile` user option naming another project; confine_pod (the
  modify_pod_hook) refuses a pod outside its project's namespace or with a token;
- jupyterhub_config.py, loaded the way JupyterHub loads it, applies the whole configuration.

Stand-ins: KubeSpawner runs with `_mock=True` (its own mock hub), a small `HubUser` object in
place of JupyterHub's User wrapper (name, id, url), and a real, unsaved
`jupyterhub.orm.Spawner` to carry the server name. `_mock=True` still loads a kubeconfig, so
each KubeSpawner test points KUBECONFIG (and kubernetes_asyncio's copy of it, taken at import)
at a throwaway file for https://127.0.0.1:1; no test contacts a server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.app import JupyterHub
from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from kubespawner import KubeSpawner
from tornado.web import HTTPError
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from hub_config import config as hub
from hub_config import workspaces as hub_workspaces
from hub_config.workspaces import (
    SpawnRefused,
    choose_workspace,
    confine_pod,
    make_profile_list,
    profiles_for,
)
from provisioner.errors import PermanentError
from provisioner.models.resources import (
    DatasetSource,
    NfsSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, ComputeTier
from provisioner.planning import notebook_pods
from tests.kubespawner_harness import (
    DEV_AUTH,
    HubUser,
    dev_settings,
    hub_config_for,
    kubeconfig_to_nowhere,
    make_spawner,
    pod_manifest,
    workspace_reader,
)

PROJECT = "diabetes-2026"
NAMESPACE = "tre-diabetes-2026"
HUB_CONFIG_DIR = Path(hub.__file__).parent

Manifest = dict[str, Any]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def platform_settings() -> Settings:
    # Set explicitly, so no TRE_* variable of the shell (or of an earlier test) leaks in.
    return Settings(
        hub_namespace="tre-hub",
        hub_api_port=8081,
        notebook_port=8888,
        airlock_namespace="tre-system",
        dns_resolver_ip=None,
        platform_host_ip=None,
    )


def _workspace(
    project: str,
    *,
    members: list[str],
    phase: WorkspacePhase = WorkspacePhase.READY,
    datasets: list[WorkspaceDataset] | None = None,
    namespace: str | None = None,
) -> Workspace:
    return Workspace(
        name=project,
        spec=WorkspaceSpec(
            project=project,
            namespace=namespace or f"tre-{project}",
            members=members,
            datasets=datasets or [],
            compute_tier=ComputeTier.MEDIUM,
            expires_at=dt.date(2099, 12, 31),  # far ahead: the hub refuses ended projects
        ),
        status=WorkspaceStatus(phase=phase),
    )


@pytest.fixture
def approved_workspace() -> Workspace:
    """Ready, alice and bob, an S3 and an NFS dataset (listed out of order on purpose)."""
    return _workspace(
        PROJECT,
        members=["alice", "bob"],
        datasets=[
            WorkspaceDataset(
                name="hospital-admissions",
                manifest_sha256="b" * 64,
                classification=ClassificationTier.SENSITIVE,
                source=DatasetSource(nfs=NfsSource(server="nfs.example.org", path="/exports/adm")),
            ),
            WorkspaceDataset(
                name="census",
                manifest_sha256="a" * 64,
                classification=ClassificationTier.CONFIDENTIAL,
                source=DatasetSource(s3=S3Source(bucket="tre-datasets", prefix="census/2024/")),
            ),
        ],
    )


@pytest.fixture
def other_project_workspace() -> Workspace:
    """Ready, carol only."""
    return _workspace("cardio-study", members=["carol"])


@pytest.fixture
def frozen_workspace() -> Workspace:
    """Frozen: the controller cleared its members and datasets."""
    return _workspace("old-cohort", members=[], phase=WorkspacePhase.FROZEN)


@pytest.fixture
def all_workspaces(
    approved_workspace: Workspace, other_project_workspace: Workspace, frozen_workspace: Workspace
) -> list[Workspace]:
    return [
        frozen_workspace,
        other_project_workspace,
        approved_workspace,
        _workspace("torn-down", members=[], phase=WorkspacePhase.TORN_DOWN),
        _workspace("new-project", members=["alice"], phase=WorkspacePhase.PROVISIONING),
        _workspace("alpha-study", members=["alice"]),
    ]


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KubeSpawner loads a kubeconfig even with _mock=True; this one points at nothing."""
    return kubeconfig_to_nowhere(tmp_path / "kubeconfig", monkeypatch)


# --- PSA `restricted`, rule by rule (pod-security-admission policy/check_*.go) -----------------

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SECCOMP_ALLOWED = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod: Manifest) -> list[str]:
    """Every PSA `restricted` (baseline included) rule this pod breaks; [] if it passes."""
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    problems: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    if pod_sc.get("sysctls"):
        problems.append("pod sysctls")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_ALLOWED:
        problems.append(f"pod seccompProfile {pod_seccomp}")
    containers = [
        *(spec.get("initContainers") or []),
        *spec["containers"],
        *(spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        name = container["name"]
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_ALLOWED:
            problems.append(f"{name}: seccompProfile {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort")
    return problems


# --- apply_config on a bare Config ------------------------------------------------------------


def test_apply_config_sets_the_spawner_and_named_servers(platform_settings: Settings) -> None:
    c = hub_config_for(platform_settings, [])

    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.JupyterHub.allow_named_servers is True
    assert c.KubeSpawner.enable_user_namespaces is False
    assert "user_namespace_template" not in c.KubeSpawner
    assert c.KubeSpawner.namespace == "no-workspace-selected"
    assert c.JupyterHub.hub_connect_url == "http://hub.tre-hub.svc.cluster.local:8081"
    assert c.KubeSpawner.image == "ucloud-tre/notebook:0.1.0"
    assert c.KubeSpawner.port == 8888
    assert c.KubeSpawner.cmd == ["jupyterhub-singleuser"]
    assert c.KubeSpawner.working_dir == "/project"
    # the file browser shows /data and /project, and opens in /project
    assert c.KubeSpawner.notebook_dir == "/"
    assert c.KubeSpawner.default_url == "/lab/tree/project"
    assert callable(c.KubeSpawner.profile_list)
    assert c.KubeSpawner.modify_pod_hook is confine_pod


def test_apply_config_sets_restricted_security_and_no_token(platform_settings: Settings) -> None:
    c = hub_config_for(platform_settings, [])

    assert c.KubeSpawner.pod_security_context == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c.KubeSpawner.container_security_context == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert (c.KubeSpawner.uid, c.KubeSpawner.gid, c.KubeSpawner.fs_gid) == (1000, 100, 100)
    assert c.KubeSpawner.allow_privilege_escalation is False
    assert c.KubeSpawner.privileged is False
    assert c.KubeSpawner.service_account is None
    assert c.KubeSpawner.automount_service_account_token is False
    assert c.KubeSpawner.init_containers == []
    assert c.KubeSpawner.extra_containers == []


def test_apply_config_provisions_no_storage_and_keeps_the_policy_label(
    platform_settings: Settings,
) -> None:
    c = hub_config_for(platform_settings, [])

    assert c.KubeSpawner.storage_pvc_ensure is False
    assert c.KubeSpawner.delete_pvc is False
    assert c.KubeSpawner.volumes == []
    assert c.KubeSpawner.volume_mounts == []
    assert c.KubeSpawner.component_label == "singleuser-server"
    assert c.KubeSpawner.extra_labels["tre.ucloud.org/project"] == "{unescaped_servername}"


def test_apply_config_has_no_internet_facing_defaults(platform_settings: Settings) -> None:
    c = hub_config_for(platform_settings, [])

    assert c.KubeSpawner.disable_user_config is True
    assert c.KubeSpawner.image_pull_policy == "IfNotPresent"
    environment = dict(c.KubeSpawner.environment)
    # The Jupyter server's own address: the pod's loopback (test_kubespawner_pod_for_a_...).
    assert isinstance(environment.pop("JUPYTERHUB_SERVICE_URL"), hub.LoopbackServiceUrl)
    assert environment == {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    assert c.KubeSpawner.services_enabled is False


def test_apply_config_sets_only_real_configurable_traits(platform_settings: Settings) -> None:
    c = hub_config_for(platform_settings, [])

    assert set(c) == {"JupyterHub", "KubeSpawner", "SharedPasswordAuthenticator", "Authenticator"}
    spawner_traits = set(KubeSpawner.class_trait_names(config=True))
    hub_traits = set(JupyterHub.class_trait_names(config=True))
    auth_traits = set(SharedPasswordAuthenticator.class_trait_names(config=True))
    assert set(c.KubeSpawner) - spawner_traits == set()
    assert set(c.JupyterHub) - hub_traits == set()
    assert set(c.SharedPasswordAuthenticator) - auth_traits == set()
    assert set(c.Authenticator) - auth_traits == set()


def test_apply_config_is_deterministic(platform_settings: Settings) -> None:
    reader = workspace_reader([])
    first, second = Config(), Config()
    settings = dev_settings(platform_settings)
    hub.apply_config(first, settings, DEV_AUTH, workspace_reader=reader)
    hub.apply_config(second, settings, DEV_AUTH, workspace_reader=reader)

    def plain(c: Config) -> dict[str, Any]:
        # The profile list is a fresh closure each time; everything else must be equal.
        return {
            section: {k: v for k, v in c[section].items() if k != "profile_list"} for section in c
        }

    assert plain(first) == plain(second)


# --- profiles_for -----------------------------------------------------------------------------


def test_profiles_offer_only_ready_workspaces_that_list_the_user(
    all_workspaces: list[Workspace],
) -> None:
    profiles = profiles_for("alice", all_workspaces)

    assert [p["slug"] for p in profiles] == ["alpha-study", PROJECT]
    assert [p["default"] for p in profiles] == [True, False]
    assert profiles_for("carol", all_workspaces)[0]["slug"] == "cardio-study"
    assert profiles_for("mallory", all_workspaces) == []


def test_profile_overrides_namespace_and_mounts_data_read_only(
    approved_workspace: Workspace,
) -> None:
    (profile,) = profiles_for("bob", [approved_workspace])

    assert profile == {
        "slug": PROJECT,
        "display_name": f"Project {PROJECT}",
        "description": (
            "Approved data, read-only: /data/census, /data/hospital-admissions; "
            "shared project files: /project; compute tier: medium; approved until 2099-12-31."
        ),
        "default": True,
        "kubespawner_override": {
            "namespace": NAMESPACE,
            "volumes": [
                {
                    "name": "ds-census",
                    "persistentVolumeClaim": {"claimName": "ds-census", "readOnly": True},
                },
                {
                    "name": "ds-hospital-admissions",
                    "persistentVolumeClaim": {
                        "claimName": "ds-hospital-admissions",
                        "readOnly": True,
                    },
                },
                {"name": "project", "persistentVolumeClaim": {"claimName": "project-storage"}},
            ],
            "volume_mounts": [
                {"name": "ds-census", "mountPath": "/data/census", "readOnly": True},
                {
                    "name": "ds-hospital-admissions",
                    "mountPath": "/data/hospital-admissions",
                    "readOnly": True,
                },
                {"name": "project", "mountPath": "/project"},
            ],
        },
    }


def test_profiles_skip_an_inconsistent_workspace(approved_workspace: Workspace) -> None:
    moved = approved_workspace.model_copy(
        update={"spec": approved_workspace.spec.model_copy(update={"namespace": "tre-hub"})}
    )

    assert profiles_for("alice", [moved]) == []


# --- choose_workspace -------------------------------------------------------------------------


def test_choose_workspace_returns_the_servers_project(
    all_workspaces: list[Workspace], approved_workspace: Workspace
) -> None:
    assert choose_workspace("alice", PROJECT, all_workspaces) == approved_workspace


REFUSALS = [
    pytest.param(
        "alice",
        "",
        "cannot start a default server: every project has its own named server; start the "
        f"server named after one of your projects: alpha-study, {PROJECT}",
        id="default-server",
    ),
    pytest.param(
        "mallory",
        "",
        "cannot start a default server: every project has its own named server; user "
        "'mallory' is in no Ready project yet; ask your project lead to file an access "
        "request that lists you",
        id="default-server-no-projects",
    ),
    pytest.param(
        "alice",
        "no-such-thing",
        "cannot start server 'no-such-thing': there is no project 'no-such-thing'; start the "
        f"server named after one of your projects: alpha-study, {PROJECT}",
        id="no-such-project",
    ),
    pytest.param(
        "alice",
        "old-cohort",
        "cannot start server 'old-cohort': project 'old-cohort' is Frozen: it has no active "
        "approval, so its data is no longer mounted (its /project files are kept); the project "
        "lead can request an extension",
        id="frozen",
    ),
    pytest.param(
        "alice",
        "torn-down",
        "cannot start server 'torn-down': project 'torn-down' was torn down after its "
        "retention period; its outputs are archived. File a new access request to work on it "
        "again",
        id="torn-down",
    ),
    pytest.param(
        "alice",
        "new-project",
        "cannot start server 'new-project': project 'new-project' is still being provisioned; "
        "try again when it is Ready (usually within a minute)",
        id="provisioning",
    ),
    pytest.param(
        "alice",
        "cardio-study",
        "cannot start server 'cardio-study': user 'alice' is not a member of project "
        "'cardio-study'; ask its project lead to add you with an amendment request",
        id="not-a-member",
    ),
]


def test_choose_workspace_refuses_a_project_past_its_end_date(
    approved_workspace: Workspace,
) -> None:
    """Even while the status still says Ready (the controller freezes it at its next pass)."""
    ended = approved_workspace.model_copy(
        update={
            "spec": approved_workspace.spec.model_copy(update={"expires_at": dt.date(2020, 1, 1)})
        }
    )
    with pytest.raises(SpawnRefused) as refused:
        choose_workspace("alice", PROJECT, [ended])
    assert str(refused.value) == (
        f"cannot start server {PROJECT!r}: project {PROJECT!r} ended on 2020-01-01; ask its "
        "project lead to request an extension"
    )


@pytest.mark.parametrize(("user", "server_name", "message"), REFUSALS)
def test_choose_workspace_refuses_with_a_clear_message(
    all_workspaces: list[Workspace], user: str, server_name: str, message: str
) -> None:
    with pytest.raises(SpawnRefused) as refused:
        choose_workspace(user, server_name, all_workspaces)

    assert str(refused.value) == message
    assert refused.value.jupyterhub_message == message
    assert isinstance(refused.value, PermanentError)
    # What JupyterHub's REST API and spawn page answer with: the server is not named after a
    # project of the user's (400), or this one is refused (403); never a 500.
    not_a_project = server_name == "" or "there is no project" in message
    assert refused.value.status_code == (400 if not_a_project else 403)
    assert isinstance(refused.value, HTTPError)


def test_choose_workspace_refuses_an_inconsistent_workspace(approved_workspace: Workspace) -> None:
    moved = approved_workspace.model_copy(
        update={"spec": approved_workspace.spec.model_copy(update={"namespace": "tre-other"})}
    )

    with pytest.raises(SpawnRefused) as refused:
        choose_workspace("alice", PROJECT, [moved])

    assert str(refused.value) == (
        f"cannot start server '{PROJECT}': project '{PROJECT}' is inconsistent (spec.project "
        f"'{PROJECT}', spec.namespace 'tre-other', expected '{NAMESPACE}' outside the hub's "
        "and the airlock's namespaces); tell the platform admins"
    )


def test_choose_workspace_refuses_the_hubs_own_namespace() -> None:
    hub_project = _workspace("hub", members=["alice"])

    with pytest.raises(SpawnRefused, match="expected 'tre-hub' outside the hub's"):
        choose_workspace("alice", "hub", [hub_project], forbidden_namespaces={"tre-hub"})


# --- the profile_list glue --------------------------------------------------------------------


class ServerStub:
    """What the profile_list callable reads from a spawner: user name and server name."""

    def __init__(self, user: str, name: str) -> None:
        self.user = HubUser(user)
        self.name = name


def test_profile_list_reads_workspaces_on_every_call(approved_workspace: Workspace) -> None:
    seen: list[Workspace] = [approved_workspace]
    reads = 0

    async def reader() -> list[Workspace]:
        nonlocal reads
        reads += 1
        return list(seen)

    profile_list = make_profile_list(reader, Settings())
    server = ServerStub("alice", PROJECT)

    (profile,) = asyncio.run(profile_list(server))
    assert profile["kubespawner_override"]["namespace"] == NAMESPACE

    seen[0] = _workspace(PROJECT, members=[], phase=WorkspacePhase.FROZEN)
    with pytest.raises(SpawnRefused, match=f"project '{PROJECT}' is Frozen"):
        asyncio.run(profile_list(server))
    assert reads == 2


def test_profile_list_forbids_the_hub_and_airlock_namespaces(platform_settings: Settings) -> None:
    c = hub_config_for(platform_settings, [_workspace("system", members=["alice"])])

    with pytest.raises(SpawnRefused, match="expected 'tre-system' outside"):
        asyncio.run(c.KubeSpawner.profile_list(ServerStub("alice", "system")))


# --- a real KubeSpawner with the config applied -----------------------------------------------


@pytest.mark.usefixtures("kubeconfig")
def test_kubespawner_pod_for_a_member_passes_psa_restricted(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    c = hub_config_for(platform_settings, all_workspaces)

    async def scenario() -> tuple[str, Manifest]:
        spawner = make_spawner(c, "alice", PROJECT)
        assert spawner.namespace == "no-workspace-selected"  # before the profile step
        pod = await pod_manifest(spawner)
        return spawner.namespace, pod

    namespace, pod = asyncio.run(scenario())

    assert namespace == NAMESPACE
    assert restricted_violations(pod) == []
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container, gate = spec["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["workingDir"] == "/project"
    assert container["ports"] == [{"containerPort": 8888, "name": "notebook-port"}]
    assert "initContainers" not in spec
    volumes = {
        v["name"]: v.get("persistentVolumeClaim", v.get("emptyDir", v.get("projected")))
        for v in spec["volumes"]
    }
    assert volumes == {
        "ds-census": {"claimName": "ds-census", "readOnly": True},
        "ds-hospital-admissions": {"claimName": "ds-hospital-admissions", "readOnly": True},
        "project": {"claimName": "project-storage"},
        "gate-state": {"sizeLimit": "40Mi"},
        # the pod's token for the gate alone, for an audience the API server does not accept
        "gate-token": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": "tre-gate",
                        "expirationSeconds": 3600,
                        "path": "token",
                    }
                }
            ]
        },
    }
    # The Jupyter server listens on the pod's loopback; the gate on the port the hub reaches.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:8890/user/alice/{PROJECT}/"
    gate_env = {e["name"]: e["value"] for e in gate["env"]}
    assert gate_env["GATE_LISTEN"] == ":8888"
    assert gate_env["GATE_UPSTREAM"] == "127.0.0.1:8890"
    assert gate_env["GATE_PREFIX"] == f"/user/alice/{PROJECT}/"
    assert (gate_env["GATE_USER"], gate_env["GATE_PROJECT"]) == ("alice", PROJECT)
    # The workspace's tier is its most sensitive dataset's (hospital-admissions): its limits.
    sensitive = platform_settings.browser_limits_by_tier[ClassificationTier.SENSITIVE]
    assert gate_env["GATE_READ_CAP"] == str(sensitive.read_cap_mib << 20)
    assert gate_env["GATE_CONTENT_BUDGET"] == str(sensitive.content_budget_mib << 20)
    assert gate["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10002,
        "runAsGroup": 10002,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert gate["volumeMounts"] == [
        {"name": "gate-state", "mountPath": "/var/run/tre-gate"},
        {"name": "gate-token", "mountPath": "/var/run/tre-gate-token", "readOnly": True},
    ]
    # It sends its records to the airlock with that token, and starts from nothing used today.
    assert gate_env["GATE_RECORDS_URL"].endswith("/api/gate/records")
    assert gate_env["GATE_TOKEN_FILE"] == "/var/run/tre-gate-token/token"
    assert (gate_env["GATE_CONTENT_USED"], gate_env["GATE_OTHER_USED"]) == ("0", "0")
    # Only the gate mounts its state and token; the notebook container mounts neither.
    assert not {"gate-state", "gate-token"} & {m["name"] for m in container["volumeMounts"]}
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    assert mounts == {
        "/data/census": True,
        "/data/hospital-admissions": True,
        "/project": False,
    }
    labels = pod["metadata"]["labels"]
    assert labels["component"] == "singleuser-server"
    assert labels["tre.ucloud.org/project"] == PROJECT
    assert pod["metadata"]["name"] == f"jupyter-alice--{PROJECT}"
    # admission and the controller match the pod to a member by this annotation
    assert pod["metadata"]["annotations"]["tre.ucloud.org/user"] == "alice"
    # no nameserver but the platform's (none configured here: a loopback that answers nothing)
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"]["nameservers"] == ["127.0.0.1"]


@pytest.mark.usefixtures("kubeconfig")
def test_the_platform_resolver_is_the_only_nameserver(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    settings = platform_settings.model_copy(update={"dns_resolver_ip": "10.99.0.1"})
    c = hub_config_for(settings, all_workspaces)

    async def scenario() -> Manifest:
        return await pod_manifest(make_spawner(c, "alice", PROJECT))

    pod = asyncio.run(scenario())
    assert pod["spec"]["dnsPolicy"] == "None"
    assert pod["spec"]["dnsConfig"] == {
        "nameservers": ["10.99.0.1"],
        "searches": [],
        "options": [{"name": "ndots", "value": "1"}],
    }


@pytest.mark.usefixtures("kubeconfig")
def test_psa_check_rejects_kubespawner_defaults(approved_workspace: Workspace) -> None:
    """The rule-by-rule check is not vacuous: KubeSpawner's own defaults fail it."""
    c = Config()
    c.KubeSpawner.profile_list = make_profile_list(
        workspace_reader([approved_workspace]), Settings()
    )

    async def scenario() -> Manifest:
        return await pod_manifest(make_spawner(c, "alice", PROJECT))

    problems = restricted_violations(asyncio.run(scenario()))

    assert "notebook: runAsNonRoot must be true" in problems
    assert "notebook: seccompProfile None" in problems
    assert "notebook: capabilities must drop ALL" in problems


@pytest.mark.usefixtures("kubeconfig")
def test_kubespawner_refuses_a_non_member_before_any_pod(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    c = hub_config_for(platform_settings, all_workspaces)

    async def scenario() -> None:
        await make_spawner(c, "alice", "cardio-study").load_user_options()

    with pytest.raises(SpawnRefused, match="user 'alice' is not a member of project"):
        asyncio.run(scenario())


@pytest.mark.usefixtures("kubeconfig")
def test_kubespawner_rejects_a_profile_option_naming_another_project(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    c = hub_config_for(platform_settings, all_workspaces)

    async def scenario() -> None:
        spawner = make_spawner(c, "alice", PROJECT)
        spawner.user_options = {"profile": "alpha-study"}
        await spawner.load_user_options()

    with pytest.raises(
        ValueError, match=f"No such profile: alpha-study. Options include: {PROJECT}"
    ):
        asyncio.run(scenario())


@pytest.mark.usefixtures("kubeconfig")
def test_confine_pod_refuses_a_pod_outside_its_project(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    c = hub_config_for(platform_settings, all_workspaces)

    async def scenario() -> None:
        spawner = make_spawner(c, "alice", PROJECT)
        # get_pod_manifest without the profile step: the fallback namespace is still set.
        pod = await spawner.get_pod_manifest()
        confine_pod(spawner, pod)

    with pytest.raises(SpawnRefused) as refused:
        asyncio.run(scenario())

    assert str(refused.value) == (
        f"cannot start server '{PROJECT}': its pod would run in namespace "
        f"'no-workspace-selected', not the project's '{NAMESPACE}'; tell the platform admins"
    )


@pytest.mark.usefixtures("kubeconfig")
def test_confine_pod_refuses_a_service_account_token(
    platform_settings: Settings, all_workspaces: list[Workspace]
) -> None:
    c = hub_config_for(platform_settings, all_workspaces)
    c.KubeSpawner.automount_service_account_token = True

    async def scenario() -> None:
        await pod_manifest(make_spawner(c, "alice", PROJECT))

    with pytest.raises(SpawnRefused, match="its pod would mount a ServiceAccount token"):
        asyncio.run(scenario())


def test_confine_pod_refuses_a_server_not_named_after_a_project() -> None:
    with pytest.raises(SpawnRefused, match="cannot start server '': it is not named after"):
        confine_pod(ServerStub("alice", ""), pod=None)


# --- the file JupyterHub loads ----------------------------------------------------------------


def test_jupyterhub_config_file_applies_the_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("a-dev-password\n")
    password.chmod(0o600)
    monkeypatch.setenv("TRE_HUB_NAMESPACE", "jhub")
    monkeypatch.setenv("TRE_HUB_DEV_AUTHENTICATOR", "true")
    monkeypatch.setenv("TRE_HUB_DEV_PASSWORD_FILE", str(password))
    # The cache's watch needs a cluster; the integration tests run it (test_hub.py).
    started: list[bool] = []
    monkeypatch.setattr(hub_workspaces, "workspace_cache", lambda: started.append(True))
    loader = PyFileConfigLoader("jupyterhub_config.py", path=str(HUB_CONFIG_DIR))

    c = loader.load_config()

    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.JupyterHub.allow_named_servers is True
    assert c.JupyterHub.hub_connect_url == "http://hub.jhub.svc.cluster.local:8081"
    assert c.KubeSpawner.automount_service_account_token is False
    assert callable(c.KubeSpawner.profile_list)
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.user_password == "a-dev-password"
    assert started == [True]


def test_jupyterhub_config_file_refuses_the_dev_sign_in_beside_oidc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRE_HUB_DEV_AUTHENTICATOR", "true")
    monkeypatch.setenv("TRE_HUB_OIDC_CLIENT_ID", "tre-hub")
    loader = PyFileConfigLoader("jupyterhub_config.py", path=str(HUB_CONFIG_DIR))

    with pytest.raises(SystemExit) as refused:
        loader.load_config()

    assert str(refused.value) == (
        "hub configuration refused: TRE_HUB_DEV_AUTHENTICATOR: the development sign-in is "
        "refused because OIDC settings are present (TRE_HUB_OIDC_CLIENT_ID); a deployment "
        "signs in through OIDC only: unset TRE_HUB_DEV_AUTHENTICATOR, or remove the OIDC "
        "settings on a development machine"
    )


def test_a_workspace_without_datasets_has_the_public_tiers_browser_limits() -> None:
    empty = _workspace(PROJECT, members=["alice"])

    assert notebook_pods.workspace_tier(empty) is ClassificationTier.PUBLIC
