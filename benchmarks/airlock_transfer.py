"""Submit and release of one large file through the airlock, against a plain boto3 baseline.

Run by hand (never from the test suite), from the repository root, with a local platform
running (`tre dev up --state-dir DIR`):

    .venv/bin/python benchmarks/airlock_transfer.py --state-dir DIR --size-mib 1024 --rounds 3

What is measured, on the platform's S3 server (SeaweedFS on 127.0.0.1):

- **ours**: the airlock's path as the service runs it, in a child process of its own:
  `open_confined` + `quarantine_file` (8 MiB parts read from the descriptor, sha256 while
  streaming, multipart upload into the quarantine bucket), then `release_export` (server-side
  copy to the egress bucket, the copy read back and hashed, the manifest written last). The
  sha256 that `tre export submit` computes to declare the file (one local read) is timed
  separately ("declare") and not in the ratio; the automated checks are a reviewer-side step
  and are not part of it (`--checks` times them once).
- **baseline**: in a child process, boto3's `upload_file` (its default transfer manager:
  8 MiB parts, 10 threads) into the same quarantine bucket, then one `copy_object` to the
  egress bucket. No hashing, no verification.

The two alternate, `--rounds` times each, ours first; objects are deleted after each run.
Throughput ratio = median baseline seconds / median ours seconds (target >= 0.8). Peak RSS is
each child's `ru_maxrss` (target for ours < 150 MB whatever the size). The test file is
written to /tmp and deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from provisioner.airlock.checks import (
    CheckRules,
    DatasetComparison,
    FileReport,
)
from provisioner.airlock.keys import ExportRef
from provisioner.airlock.paths import open_confined
from provisioner.airlock.quarantine import inspect_quarantined, quarantine_file
from provisioner.airlock.release import ensure_airlock_buckets, release_export
from provisioner.models.resources import (
    ExportFile,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    Workspace,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.storage.s3 import list_versions, s3_client

NAME = "result.csv"
MiB = 1 << 20


def settings_for(state_dir: Path, max_bytes: int) -> Settings:
    """The parent's settings, from the platform's state directory."""
    # Imported here: the children get their settings from the environment and do not load
    # the devcluster package, so their peak RSS is that of the airlock's path alone.
    from provisioner.devcluster.cluster import DevCluster

    endpoint = DevCluster(state_dir).s3()
    return Settings(
        s3_endpoint_url=endpoint.url,
        s3_region=endpoint.region,
        s3_access_key_id=SecretStr(endpoint.access_key),
        s3_secret_access_key=SecretStr(endpoint.secret_key),
        airlock_quarantine_bucket="bench-quarantine",
        airlock_egress_bucket="bench-egress",
        airlock_max_file_bytes=max_bytes,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The TRE_* variables that give a child process the same settings."""
    assert settings.s3_access_key_id and settings.s3_secret_access_key
    return {
        "TRE_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "TRE_S3_REGION": settings.s3_region,
        "TRE_S3_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "TRE_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "TRE_AIRLOCK_QUARANTINE_BUCKET": settings.airlock_quarantine_bucket,
        "TRE_AIRLOCK_EGRESS_BUCKET": settings.airlock_egress_bucket,
        "TRE_AIRLOCK_MAX_FILE_BYTES": str(settings.airlock_max_file_bytes),
    }


def write_test_file(path: Path, size: int) -> str:
    """A CSV of `size` bytes: a header, then rows of two 31-character hex cells from
    os.urandom (incompressible, so the server cannot shortcut, and rows a table would have);
    returns its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size

        def emit(block: bytes) -> None:
            nonlocal left
            block = block[:left]
            out.write(block)
            digest.update(block)
            left -= len(block)

        emit(b"left,right\n")
        while left > 0:
            cells = os.urandom(31 * 1024).hex().encode()  # 1024 rows of 64 bytes
            emit(
                b"".join(
                    cells[i : i + 31] + b"," + cells[i + 31 : i + 62] + b"\n"
                    for i in range(0, len(cells), 62)
                )
            )
    return digest.hexdigest()


def approved_request(size: int, sha256: str) -> ExportRequest:
    return ExportRequest(
        name=f"bench-{uuid.uuid4().hex[:8]}",
        namespace="tre-bench",
        uid=str(uuid.uuid4()),
        spec=ExportRequestSpec(
            project="bench",
            author="lea",
            files=[ExportFile(path=NAME, size=size, sha256=sha256, description="benchmark")],
            context="a benchmark of the airlock's data path",
        ),
        status=ExportRequestStatus(phase=ExportPhase.APPROVED, reviewers=["omar", "una"]),
    )


def run_ours(settings: Settings, root: Path, size: int, sha256: str) -> dict[str, Any]:
    from provisioner.airlock import release

    # Time the read-back hashes inside the release by wrapping the function it calls (the
    # production code is unchanged): the 404 probe before the copy and the verification after.
    reading = [0.0]
    read_back = release.stored_sha256

    def timed_read_back(*args: Any, **kwargs: Any) -> tuple[int, str]:
        began = time.perf_counter()
        try:
            return read_back(*args, **kwargs)
        finally:
            reading[0] += time.perf_counter() - began

    release.stored_sha256 = timed_read_back  # type: ignore[assignment]
    client = s3_client(settings)
    request = approved_request(size, sha256)
    ref = ExportRef.of(request)
    workspace = Workspace(name="bench", spec=WorkspaceSpec(project="bench", namespace="tre-bench"))
    start = time.perf_counter()
    with open_confined(root, NAME, max_bytes=settings.airlock_max_file_bytes) as source:
        quarantine_file(
            client,
            settings.airlock_quarantine_bucket,
            ref,
            request.spec.files[0],
            source,
            allowed_types=settings.airlock_allowed_types,
        )
    submitted = time.perf_counter()
    release_export(
        client,
        settings,
        request,
        workspace,
        {NAME: FileReport(path=NAME, size=size, sha256=sha256)},
        released_by="lea",
        now=dt.datetime.now(dt.UTC),
    )
    done = time.perf_counter()
    return {
        "seconds": done - start,
        "submit_seconds": submitted - start,
        "release_seconds": done - submitted,
        "verify_seconds": reading[0],
        "prefix": ref.prefix,
    }


def run_baseline(settings: Settings, root: Path) -> dict[str, Any]:
    client = s3_client(settings)
    key = f"baseline/{uuid.uuid4().hex}/{NAME}"
    start = time.perf_counter()
    client.upload_file(str(root / NAME), settings.airlock_quarantine_bucket, key)
    uploaded = time.perf_counter()
    client.copy_object(
        Bucket=settings.airlock_egress_bucket,
        Key=key,
        CopySource={"Bucket": settings.airlock_quarantine_bucket, "Key": key},
    )
    done = time.perf_counter()
    return {
        "seconds": done - start,
        "submit_seconds": uploaded - start,
        "release_seconds": done - uploaded,
        "prefix": key.rsplit("/", 1)[0] + "/",
    }


def run_declare(root: Path) -> dict[str, Any]:
    start = time.perf_counter()
    digest = hashlib.sha256()
    with (root / NAME).open("rb") as source:
        while chunk := source.read(MiB):
            digest.update(chunk)
    return {"seconds": time.perf_counter() - start, "prefix": ""}


def run_checks(settings: Settings, size: int, sha256: str, prefix_of: str) -> dict[str, Any]:
    """The automated checks over a quarantined file (streamed back from S3)."""
    client = s3_client(settings)
    _, _project, name, uid, _ = prefix_of.split("/", 4)
    request = approved_request(size, sha256).model_copy(update={"name": name, "uid": uid})
    start = time.perf_counter()
    report = inspect_quarantined(
        client,
        settings.airlock_quarantine_bucket,
        ExportRef.of(request),
        request.spec.files[0],
        rules=CheckRules.from_settings(settings),
        comparison=DatasetComparison(),
    )
    return {
        "seconds": time.perf_counter() - start,
        "prefix": prefix_of,
        "findings": [f.to_dict() for f in report.findings],
    }


def child(args: argparse.Namespace) -> None:
    settings = Settings()
    root = Path(args.root)
    if args.child == "ours":
        result = run_ours(settings, root, args.size, args.sha256)
    elif args.child == "baseline":
        result = run_baseline(settings, root)
    elif args.child == "declare":
        result = run_declare(root)
    else:
        result = run_checks(settings, args.size, args.sha256, args.prefix)
    # ru_maxrss is in KiB on Linux: the peak resident set of this process alone
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def spawn(
    kind: str, settings: Settings, root: Path, size: int, sha256: str, **extra: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--root",
        str(root),
        "--size",
        str(size),
        "--sha256",
        sha256,
    ]
    for flag, value in extra.items():
        command += [f"--{flag}", value]
    env = {
        **os.environ,
        **settings_env(settings),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def clean(settings: Settings, prefix: str) -> None:
    client = s3_client(settings)
    for bucket in (settings.airlock_quarantine_bucket, settings.airlock_egress_bucket):
        for version in list_versions(client, bucket, prefix):
            client.delete_object(Bucket=bucket, Key=version.key, VersionId=version.version_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, help="a running `tre dev up` (required)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checks", action="store_true", help="also time the checks once")
    parser.add_argument("--child", choices=["ours", "baseline", "declare", "checks"])
    parser.add_argument("--root")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--sha256", default="")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    if args.state_dir is None:
        parser.error("--state-dir: give the state directory of a running `tre dev up`")
    size = args.size_mib * MiB
    settings = settings_for(args.state_dir, size)
    ensure_airlock_buckets(s3_client(settings), settings)
    with tempfile.TemporaryDirectory(prefix="airlock-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        sha256 = write_test_file(root / NAME, size)
        print(f"wrote {size} bytes in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": [], "declare": []}
        for round_number in range(1, args.rounds + 1):
            for kind in ("ours", "baseline"):
                result = spawn(kind, settings, root, size, sha256)
                runs[kind].append(result)
                if kind == "ours" and args.checks and round_number == 1:
                    runs["checks"] = [
                        spawn("checks", settings, root, size, sha256, prefix=result["prefix"])
                    ]
                clean(settings, result["prefix"])
                print(
                    f"round {round_number} {kind}: {result['seconds']:.2f}s "
                    f"(submit {result['submit_seconds']:.2f}s, release "
                    f"{result['release_seconds']:.2f}s, of which verify "
                    f"{result.get('verify_seconds', 0):.2f}s), peak RSS "
                    f"{result['max_rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
            runs["declare"].append(spawn("declare", settings, root, size, sha256))
    ours = statistics.median(r["seconds"] for r in runs["ours"])
    base = statistics.median(r["seconds"] for r in runs["baseline"])
    summary = {
        "size_bytes": size,
        "rounds": args.rounds,
        "ours_median_seconds": round(ours, 2),
        "ours_mib_per_second": round(size / MiB / ours, 1),
        "baseline_median_seconds": round(base, 2),
        "baseline_mib_per_second": round(size / MiB / base, 1),
        "throughput_ratio": round(base / ours, 2),
        "ours_peak_rss_mb": round(max(r["max_rss_mb"] for r in runs["ours"]), 1),
        "baseline_peak_rss_mb": round(max(r["max_rss_mb"] for r in runs["baseline"]), 1),
        "declare_median_seconds": round(
            statistics.median(r["seconds"] for r in runs["declare"]), 2
        ),
        "runs": runs,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
