"""A thin, typed wrapper over the Kubernetes REST API with our error tree.

Objects are plain dicts (what the planner emits, what the server returns). Every write of the
platform's own objects is a server-side apply with one field manager, so fields the planner
stops declaring are removed by the server, and fields other managers own are left alone.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from provisioner.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RefusedError,
    TemporaryError,
    TreError,
)
from provisioner.kube.http import HttpClient, HttpError
from provisioner.kube.resources import Resource, resource_for
from provisioner.planning.names import FIELD_MANAGER

if TYPE_CHECKING:
    from kubernetes import client

Manifest = dict[str, Any]


class WatchExpired(TemporaryError):
    """The server no longer has the history a watch asked for (410 Gone): list again."""


class HttpFailure(Protocol):
    """An answer outside 2xx: the official client's ApiException or our HttpError."""

    status: int
    reason: str
    body: Any


def error_message(exc: HttpFailure) -> str:
    """The server's own message (admission policies put the field and the fix there)."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


# A server-side apply with a field the schema does not declare is answered with HTTP 500
# (kubernetes#139253, fix proposed in #139255); it is the request's fault, and retrying it
# cannot help.
_APPLY_SCHEMA_ERROR = "failed to create typed patch object"


def translate(exc: HttpFailure, what: str) -> TreError:
    server_says = error_message(exc)
    message = f"{what}: {server_says}"
    if exc.status == 404:
        return NotFoundError(message)
    if exc.status == 403:
        return ForbiddenError(message)
    if exc.status in (400, 422):
        return RefusedError(message)
    if exc.status == 500 and server_says.startswith(_APPLY_SCHEMA_ERROR):
        return RefusedError(message)
    if exc.status == 409:
        return ConflictError(message)
    return TemporaryError(message)


class Kube:
    """One identity's view of the API server."""

    def __init__(
        self, api: client.ApiClient | HttpClient, field_manager: str = FIELD_MANAGER
    ) -> None:
        # Any: the official client ships no types; the controller's watches call `call_api`
        # on it directly, which only the official client has (`tre controller` uses it).
        self.api: Any = api
        self.field_manager = field_manager

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str | None = None,
    ) -> Manifest:
        if isinstance(self.api, HttpClient):
            try:
                data = self.api.send(
                    method, path, query=query or [], body=body, content_type=content_type
                )
            except HttpError as exc:
                raise translate(exc, what or f"{method} {path}") from exc
            except TemporaryError as exc:
                raise TemporaryError(f"{what or path}: {exc}") from exc
            return json.loads(data) if data else {}
        # The official client (the controller, tests): imported only where it is used.
        import urllib3
        from kubernetes.client.rest import ApiException

        try:
            response = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=30,
            )
        except ApiException as exc:
            raise translate(exc, what or f"{method} {path}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryError(f"{what or path}: cannot reach the API server ({exc})") from exc
        # Without preloading, the client returns the raw urllib3 response (a tuple in some
        # client versions): we decode JSON ourselves and skip its model deserialisation.
        raw = response[0] if isinstance(response, tuple) else response
        data = raw.data
        return json.loads(data) if data else {}

    # --- reads ------------------------------------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Manifest | None:
        try:
            return self.request("GET", resource.path(namespace, name))
        except NotFoundError:
            return None

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str | None = None,
        fields: str | None = None,
    ) -> list[Manifest]:
        return self.list_versioned(resource, namespace=namespace, selector=selector, fields=fields)[
            0
        ]

    def list_versioned(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str | None = None,
        fields: str | None = None,
    ) -> tuple[builtins.list[Manifest], str]:
        """Every item, and the collection's resourceVersion to watch from. The pages of one
        list are one consistent snapshot (the continue token pins it), so the first page's
        version is the whole list's."""
        query = [("labelSelector", selector)] if selector else []
        if fields:
            query.append(("fieldSelector", fields))
        items: list[Manifest] = []
        cont = ""
        version = ""
        while True:
            page = self.request(
                "GET",
                resource.path(namespace),
                query=[*query, ("limit", "500"), *([("continue", cont)] if cont else [])],
            )
            version = version or page.get("metadata", {}).get("resourceVersion", "")
            for item in page.get("items", []):
                # Items of a list carry no apiVersion/kind; put them back so an item
                # compares equal to the manifest that declared it.
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            cont = page.get("metadata", {}).get("continue", "")
            if not cont:
                return items, version

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_seconds: int = 60,
        bookmarks: bool = False,
    ) -> Iterator[Manifest]:
        """The events of `resource` after `resource_version`, each {type, object}, until the
        server ends the watch after `timeout_seconds` (the caller watches again from the last
        version it saw). An ERROR event raises: WatchExpired for 410 Gone, TemporaryError for
        anything else. Needs the official client (the light HttpClient does not stream)."""
        response = self.api.call_api(
            resource.path(),
            "GET",
            query_params=[
                ("watch", "1"),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", str(timeout_seconds)),
                ("allowWatchBookmarks", "true" if bookmarks else "false"),
            ],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout_seconds + 30,
        )
        raw = response[0] if isinstance(response, tuple) else response
        for line in raw:
            if not line.strip():
                continue
            event: Manifest = json.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                if status.get("code") == 410:
                    raise WatchExpired(f"watch {resource.plural}: {status.get('message')}")
                raise TemporaryError(f"watch {resource.plural}: error {status}")
            yield event

    # --- writes -----------------------------------------------------------------------------

    def apply(self, manifest: Manifest, *, dry_run: bool = False, force: bool = True) -> Manifest:
        """Server-side apply `manifest` as our field manager; returns the live object."""
        resource = resource_for(manifest)
        meta = manifest["metadata"]
        # fieldValidation=Ignore: for an apply the server's strict pass can only find duplicate
        # keys (unknown fields fail the apply whatever this says), and a JSON-encoded dict has
        # none; skipping it saves the server a second YAML parse of every body.
        query = [("fieldManager", self.field_manager), ("fieldValidation", "Ignore")]
        if force:
            # We own these objects: take back fields someone changed by hand (drift repair).
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            query=query,
            body=manifest,  # the client JSON-encodes it, and JSON is valid YAML
            content_type="application/apply-patch+yaml",
            what=f"apply {manifest['kind']} {meta['name']}",
        )

    def create(self, manifest: Manifest, *, dry_run: bool = False) -> Manifest:
        resource = resource_for(manifest)
        query = [("fieldManager", self.field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request(
            "POST",
            resource.path(manifest["metadata"].get("namespace")),
            query=query,
            body=manifest,
            what=f"create {manifest['kind']} {manifest['metadata'].get('name', '')}",
        )

    def replace(self, manifest: Manifest) -> Manifest:
        """PUT with the object's resourceVersion: fails with ConflictError if it changed."""
        resource = resource_for(manifest)
        meta = manifest["metadata"]
        return self.request(
            "PUT",
            resource.path(meta.get("namespace"), meta["name"]),
            query=[("fieldManager", self.field_manager)],
            body=manifest,
            what=f"update {manifest['kind']} {meta['name']}",
        )

    def patch_status(
        self,
        resource: Resource,
        name: str,
        status: Manifest,
        namespace: str | None = None,
        *,
        uid: str | None = None,
    ) -> Manifest:
        """Merge `status` in. With `uid`, only into that object: one deleted and created
        again under the same name meanwhile refuses the patch (ConflictError)."""
        body: dict[str, Any] = {"status": status}
        if uid:
            body["metadata"] = {"uid": uid}
        return self.request(
            "PATCH",
            resource.path(namespace, name) + "/status",
            query=[("fieldManager", self.field_manager)],
            body=body,
            content_type="application/merge-patch+json",
            what=f"update status of {resource.kind} {name}",
        )

    def patch_finalizers(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        old: Sequence[str],
        new: Sequence[str],
    ) -> bool:
        """Set metadata.finalizers from `old` to `new` (a JSON patch that tests `old` first, so
        a list someone changed meanwhile is not overwritten); False if the object is gone."""
        path = "/metadata/finalizers"
        test = [{"op": "test", "path": path, "value": list(old)}] if old else []
        ops = [*test, {"op": "add", "path": path, "value": list(new)}]
        try:
            self.request(
                "PATCH",
                resource.path(namespace, name),
                query=[("fieldManager", self.field_manager)],
                body=ops,
                content_type="application/json-patch+json",
                what=f"set the finalizers of {resource.kind} {name}",
            )
        except NotFoundError:
            return False
        return True

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete; returns False if it was already gone."""
        try:
            self.request(
                "DELETE",
                resource.path(namespace, name),
                query=[("propagationPolicy", "Background")],
            )
        except NotFoundError:
            return False
        return True
