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
        good=("", "a", "a/", "cohort/2026/", "a//b/", ".hidden/", "..x/", ".../", "a.b/c"),
        bad=("/a/", "/", "./", "../", "a/./b/", "a/../", "a/..", ".", "..", "x" * 1025),
    ),
    DomainValues(
        "nfs_path",
        good=("/", "/exports/reg", "/exports/reg/", "/a/.hidden", "/a/..b"),
        bad=("exports", "/a/../b", "/./a", "/a/.", "/a/..", "/" + "x" * 4096),
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
