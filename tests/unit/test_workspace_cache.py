"""The hub's in-memory Workspace cache (hub_config.workspaces.WorkspaceCache).

Behaviours under test:
- apply_workspace_event: ADDED and MODIFIED replace a workspace, DELETED removes it, a version
  that does not parse removes it too (fail closed, with a warning), BOOKMARK only moves the
  resourceVersion;
- before its first list has completed the cache refuses every start (503, with the reason);
- it lists, then watches from the list's resourceVersion and from each event's after that;
- a watch that expires (410 Gone) makes it list again at once, without back-off;
- any other failure makes it list again after a back-off that doubles up to its cap; while
  broken for longer than `stale_after` it refuses starts, and serves again once it has
  listed.

The source is a scripted stand-in for `Kube` (list_versioned + watch) that plays what the API
server sends; the real watch against the real API server is in tests/integration/test_hub.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hub_config.workspaces import SpawnRefused, WorkspaceCache, apply_workspace_event
from provisioner.errors import TemporaryError
from provisioner.kube.api import WatchExpired
from provisioner.models.resources import Workspace, WorkspacePhase, WorkspaceSpec


def workspace_object(name: str, version: str, phase: str = "Ready") -> dict[str, Any]:
    obj = Workspace(
        name=name,
        spec=WorkspaceSpec(project=name, namespace=f"tre-{name}", members=["alice"]),
    ).to_object()
    obj["metadata"]["resourceVersion"] = version
    obj["status"] = {"phase": phase}  # to_object carries the spec only; status is the server's
    return obj


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


# --- apply_workspace_event ------------------------------------------------------------------


def test_events_add_replace_and_remove_workspaces() -> None:
    cache: dict[str, Workspace] = {}
    assert apply_workspace_event(cache, event("ADDED", workspace_object("alpha", "5"))) == "5"
    assert cache["alpha"].status.phase is WorkspacePhase.READY
    apply_workspace_event(cache, event("MODIFIED", workspace_object("alpha", "6", "Frozen")))
    assert cache["alpha"].status.phase is WorkspacePhase.FROZEN
    assert apply_workspace_event(cache, event("DELETED", workspace_object("alpha", "7"))) == "7"
    assert cache == {}


def test_a_version_that_does_not_parse_removes_the_workspace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache: dict[str, Workspace] = {}
    apply_workspace_event(cache, event("ADDED", workspace_object("alpha", "5")))
    broken = workspace_object("alpha", "6")
    broken["spec"]["members"] = "not a list"
    apply_workspace_event(cache, event("MODIFIED", broken))
    assert cache == {}
    assert "skipping Workspace alpha: it does not parse" in caplog.text


def test_a_bookmark_only_moves_the_version() -> None:
    cache: dict[str, Workspace] = {}
    apply_workspace_event(cache, event("ADDED", workspace_object("alpha", "5")))
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    assert apply_workspace_event(cache, bookmark) == "9"
    assert list(cache) == ["alpha"]


# --- the cache's loop -------------------------------------------------------------------------


class ScriptedApi:
    """Plays what the API server answers: each list and each watch takes the next step of its
    script; a step is a value to return or an exception to raise. The last step repeats."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []
        self.list_times: list[float] = []
        self.idle = threading.Event()  # set when a watch step blocks (the script has run)

    def list_versioned(self, resource: Any) -> tuple[list[dict[str, Any]], str]:
        self.list_times.append(time.monotonic())
        step = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        if isinstance(step, Exception):
            raise step
        return step  # type: ignore[no-any-return]

    def watch(self, resource: Any, *, resource_version: str, **_: Any) -> Iterator[Any]:
        self.watched_from.append(resource_version)
        step = self.watches.pop(0) if self.watches else None
        if step is None:  # nothing more to play: a quiet watch
            self.idle.set()
            time.sleep(0.05)
            return
        if isinstance(step, Exception):
            raise step
        yield from step


def run_cache(api: ScriptedApi, **options: Any) -> WorkspaceCache:
    cache = WorkspaceCache(lambda: api, **options).start()  # type: ignore[arg-type, return-value]
    return cache


def names(read: Callable[[], Any]) -> list[str]:
    return sorted(w.name for w in asyncio.run(read()))


def test_starts_are_refused_until_the_first_list_completes() -> None:
    cache = WorkspaceCache(lambda: None)  # type: ignore[arg-type, return-value]  # never started
    with pytest.raises(SpawnRefused) as refused:
        asyncio.run(cache.read())
    assert refused.value.status_code == 503
    assert str(refused.value) == (
        "the hub is still reading the workspaces from the cluster, so it cannot check your "
        "access yet; try again in a few seconds"
    )


def test_lists_then_watches_from_each_version() -> None:
    api = ScriptedApi(
        lists=[([workspace_object("alpha", "10")], "10")],
        watches=[
            [event("ADDED", workspace_object("beta", "11"))],
            [event("DELETED", workspace_object("alpha", "12"))],
        ],
    )
    cache = run_cache(api)
    assert api.idle.wait(5)
    cache.stop()
    assert names(cache.read) == ["beta"]
    assert api.watched_from[:3] == ["10", "11", "12"]
    assert len(api.list_times) == 1  # a watch that ends normally is resumed, not relisted


def test_an_expired_watch_lists_again_at_once() -> None:
    api = ScriptedApi(
        lists=[([workspace_object("alpha", "10")], "10"), ([workspace_object("beta", "20")], "20")],
        watches=[WatchExpired("too old resource version: 10 (15)")],
    )
    cache = run_cache(api, backoff=(5.0, 5.0))
    assert api.idle.wait(5)
    cache.stop()
    assert names(cache.read) == ["beta"]  # the second list replaced the first
    assert api.watched_from[:2] == ["10", "20"]
    assert api.list_times[1] - api.list_times[0] < 1.0  # no 5 s back-off


def test_failures_back_off_and_a_long_break_refuses_starts() -> None:
    down = TemporaryError("cannot reach the API server")
    api = ScriptedApi(
        lists=[([workspace_object("alpha", "10")], "10"), down, down, down, ([], "30")],
        watches=[down],
    )
    cache = run_cache(api, backoff=(0.1, 0.2), stale_after=0.15)
    deadline = time.monotonic() + 5
    refused: SpawnRefused | None = None
    while refused is None and time.monotonic() < deadline:
        try:
            asyncio.run(cache.read())
        except SpawnRefused as exc:
            refused = exc
        time.sleep(0.02)
    assert refused is not None, "a long break never refused a start"
    assert refused.status_code == 503
    assert str(refused).startswith("the hub has lost its view of the workspaces")
    assert api.idle.wait(5)  # listed again after the outage, watching quietly
    cache.stop()
    assert names(cache.read) == []
    gaps = [b - a for a, b in zip(api.list_times, api.list_times[1:], strict=False)]
    # back-off 0.1, 0.2, then capped at 0.2 (the first failure is the watch's)
    assert [round(g, 1) for g in gaps[:4]] == [0.1, 0.2, 0.2, 0.2]
