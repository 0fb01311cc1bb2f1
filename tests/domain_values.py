"""One table of good and bad values per domain type, shared by the unit tests (the pydantic
validators and the CRD's pattern and CEL regexes) and the integration tests (the real API
server): the two sides must accept and refuse the same values.

`crd_only`: values the API server's own formats would take but the models could not (or
would read differently); the CRD refuses them, so the controller never meets them. The
models may accept them (a naive time, a space for 'T'): what the server stores is what
matters.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainValues:
    name: str
    good: tuple[str, ...]
    bad: tuple[str, ...]
    crd_only: tuple[str, ...] = ()


DOMAIN_VALUES: tuple[DomainValues, ...] = (
    DomainValues(
        "project_slug",
        good=("ab1", "diabetes-2026", "a" * 32),
        bad=("Ab1", "ab", "ab-", "1ab", "a" * 33, "a_b"),
    ),
    DomainValues(
        "dataset_name",
        good=("abc", "hospital-admissions", "a" * 40),
        bad=("ab", "1abc", "abc-", "a" * 41, "ABC"),
    ),
    DomainValues(
        "username",
        good=("alice", "a.jansen@umc.nl", "0x", "a"),
        bad=("system:admin", "system:serviceaccount:tre:x", "Alice", "-x", "a:b", "a" * 64),
    ),
    DomainValues(
        "bucket_name",
        good=("tre-data", "a.b.c", "1.2.3", "10.0.0.1a", "a-b.c-d"),
        bad=("a..b", "10.0.0.1", "256.300.1.1", "ab", "-ab", "Ab1", "a" * 64),
    ),
    DomainValues(
        "s3_prefix",
        good=("", "a", "a/", "cohort/2026/", ".hidden/", "..x/", ".../", "a.b/c", "A_b-9/x", "_x/"),
        # every separator and option syntax of the S3 mounters (rclone, mount-s3): a prefix
        # reaches their command line and mount options
        bad=(
            "/a/",
            "/",
            "./",
            "../",
            "a/./b/",
            "a/../",
            "a/..",
            ".",
            "..",
            "x" * 1025,
            "a//b/",
            "a//",
            "//",
            "a b/",
            " --allow-other",
            "a --vfs-cache-mode=full",
            "--no-check-certificate/",
            "-x/",
            "a/-x/",
            "a,rw/",
            "a=b/",
            "a\nb/",
            "a\t/",
            "a\\b/",
            "a'b/",
            'a"b/',
            "a:b/",
            "a%20/",
            "é/",
        ),
    ),
    DomainValues(
        "nfs_path",
        good=("/", "/exports/reg", "/a/.hidden", "/a/..b", "/A_b-9/x.y"),
        bad=(
            "exports",
            "/a/../b",
            "/./a",
            "/a/.",
            "/a/..",
            "/" + "x" * 1024,
            "/exports/reg/",
            "/exports//reg",
            "//exports",
            "/a b",
            "/a --allow-other",
            "/a,rw",
            "/a=b",
            "/a\nb",
            "/-x",
            "/a/-o",
            "/a:b",
            "/é",
        ),
    ),
    DomainValues(
        "nfs_server",
        good=("nfs.hospital.example", "a.b", "nfs-1.x-y.example.org", "10.0.0.1a.example"),
        bad=(
            "nfs.hospital.example.",
            "NFS.hospital.example",
            "nfs",
            "10.0.0.1",
            "fd00::1",
            "[fd00::1]",
            "nfs..example",
            "-o.example",
            "nfs.example -o rw",
            "nfs.ex,rw",
            "nfs.ex=1",
            "nfs.ex\nx",
            "nfs_1.example",
            "a-.example",
            ".",
            "",
            "a." + "b" * 64,
            "a." * 127 + "bc",
        ),
    ),
    DomainValues(
        "s3_region",
        good=("us-east-1", "eu-west-1", "garage", "a", "us-gov-west-1", "x" * 32),
        bad=(
            "",
            "us-east-1 --s3-versions",
            " --allow-other",
            "--vfs-cache-mode=full",
            "--no-check-certificate",
            "-us",
            "us-",
            "us,rw",
            "us=1",
            "us\n",
            "US-EAST-1",
            "us_east_1",
            "us.east",
            "x" * 33,
        ),
    ),
    DomainValues(
        "date",
        good=("2026-03-01", "0001-01-01", "2028-02-29"),
        bad=("0000-01-01", "2026-13-01", "2026-02-30", "2027-02-29", "26-03-01"),
    ),
    DomainValues(
        "date_time",
        good=(
            "2026-05-04T10:30:15Z",
            "2026-05-04T10:30:15.123456+02:00",
            "2026-05-04T10:30:15.1-09:30",
            "0001-01-01T00:00:00Z",
        ),
        bad=("0000-01-01T00:00:00Z", "2026-05-04T24:00:00Z", "2026-02-30T10:00:00Z", "now"),
        crd_only=(
            "2026-05-04T10:30:15",  # no offset: naive in Python, compared with aware times
            "2026-05-04 10:30:15Z",
            "2026-05-04T10:30Z",
            "2026-05-04T10:30:15.1234567Z",
            "2026-05-04T10:30:15+24:00",
            "2026-05-04t10:30:15z",
        ),
    ),
)
