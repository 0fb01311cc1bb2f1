"""The resolver's image (images/dns): one definition, its Dockerfile, which the local build
follows (provisioner.devcluster.dockerfile.go_image_recipe, images.build_image).

Behaviours under test:
- the recipe, golden: the golang base at a patch version, the CoreDNS module COPYed in and
  made the WORKDIR, the one `go build` (its environment, flags and output), the binary COPYed
  into the empty runtime, the whole runtime config (user 10001:10001, the entrypoint, the
  chart's arguments as CMD, port 53 over UDP and TCP, BuildKit's PATH of a scratch image);
- one build for the node and the image: the Dockerfile's `go build` environment and flags are
  those `ensure_coredns` compiles the node's resolver with (both run `go_build`), and its base
  is a Go release that go.mod's go line admits;
- the image is the chart's: its reference is images.dns (tag = the CoreDNS release of go.mod);
- every file of the module and the Go release are inputs of the cache key;
- `recipe_of` reads the Python images as before and this one as a Go image;
- fail closed: cgo, an unknown variable or flag, a go.mod rewrite, a relative output, a second
  step in either stage, a WORKDIR nothing would create, a runtime that is not scratch, a binary
  not built here, a Go on PATH that is not the base's release: each refused naming the line
  (or the FROM) and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.chart.values import default_values
from provisioner.devcluster import images
from provisioner.devcluster.binaries import (
    COREDNS_BUILD_ENV,
    COREDNS_BUILD_FLAGS,
    COREDNS_SOURCE,
    COREDNS_VERSION,
)
from provisioner.devcluster.dockerfile import (
    SCRATCH_ENV,
    Copy,
    GoBuild,
    GoImageRecipe,
    ImageRecipe,
    go_image_recipe,
    recipe_of,
)
from provisioner.devcluster.images import DNS, HUB, NOTEBOOK, PLATFORM, LocalImage
from provisioner.errors import DevClusterError

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = DNS.dockerfile.read_text()
CHART_UID = "10001"  # helm/ucloud-tre/templates/_helpers.tpl, tre.podSecurityContext


def test_dns_recipe() -> None:
    recipe = go_image_recipe(DOCKERFILE)

    assert recipe == GoImageRecipe(
        base="golang:1.26.8-trixie",
        go_version="1.26.8",
        copies=(Copy("provisioner/devcluster/coredns/", "/src"),),
        go_build=GoBuild(
            directory="/src",
            env=(("CGO_ENABLED", "0"), ("GOFLAGS", "-buildvcs=false -mod=readonly")),
            flags=("-trimpath", "-ldflags=-s -w"),
            output="/out/coredns",
        ),
        binaries=(("/out/coredns", "/coredns"),),
        runtime_config={
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": f"{CHART_UID}:{CHART_UID}",
            "ExposedPorts": {"53/udp": {}, "53/tcp": {}},
            "Entrypoint": ["/coredns"],
            "Cmd": ["-conf", "/etc/coredns/Corefile"],
        },
    )


def test_the_image_and_the_node_compile_coredns_the_same_way() -> None:
    recipe = go_image_recipe(DOCKERFILE)
    gomod = (COREDNS_SOURCE / "go.mod").read_text()
    (go_line,) = re.findall(r"^go (\d+\.\d+\.\d+)$", gomod, re.MULTILINE)

    assert recipe.go_build.env == COREDNS_BUILD_ENV
    assert recipe.go_build.flags == COREDNS_BUILD_FLAGS
    assert REPO / recipe.copies[0].source == COREDNS_SOURCE
    version = tuple(map(int, recipe.go_version.split(".")))
    assert version >= tuple(map(int, go_line.split(".")))


def test_the_reference_is_the_charts_images_dns() -> None:
    chart = default_values()["images"]["dns"]
    dns_yaml = (REPO / "helm" / "ucloud-tre" / "templates" / "dns.yaml").read_text()

    assert DNS.ref == f"docker.io/{chart['repository']}:{chart['tag']}"
    assert chart["tag"] == COREDNS_VERSION.removeprefix("v")
    assert "args: [-conf, /etc/coredns/Corefile]" in dns_yaml  # the image's CMD says the same


def test_every_module_file_and_the_go_release_are_inputs() -> None:
    recipe = go_image_recipe(DOCKERFILE)
    inputs = images.image_inputs(DNS, recipe)
    module = sorted(p for p in COREDNS_SOURCE.iterdir() if p.is_file())

    assert [p.name for p in module] == ["go.mod", "go.sum", "main.go"]
    assert all(p.read_bytes() in inputs for p in module)
    assert f"/src/{module[0].name}".encode() in inputs
    assert images.host_go_version().encode() in inputs
    assert DNS.dockerfile.read_bytes() in inputs
    assert (
        (DNS.source_dir / "Dockerfile.dockerignore")
        .read_text()
        .endswith("**/__pycache__\n**/*.pyc\n")
    )


def test_recipe_of_tells_the_shapes_apart() -> None:
    for image in (NOTEBOOK, PLATFORM, HUB):
        assert isinstance(recipe_of(image.dockerfile.read_text()), ImageRecipe)
    assert recipe_of(DOCKERFILE) == go_image_recipe(DOCKERFILE)
    assert SCRATCH_ENV == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


GO_BUILD = (
    'RUN CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" go build -trimpath '
    '-ldflags="-s -w" -o /out/coredns .'
)


@pytest.mark.parametrize(
    ("dockerfile", "refused"),
    [
        (DOCKERFILE.replace("CGO_ENABLED=0", "CGO_ENABLED=1"), "no C library"),
        (DOCKERFILE.replace("RUN CGO_ENABLED=0 ", "RUN "), "no C library"),
        (DOCKERFILE.replace("RUN CGO_ENABLED=0", "RUN GOOS=plan9 CGO_ENABLED=0"), "set only"),
        (DOCKERFILE.replace("-mod=readonly", "-mod=mod"), "go build flags ['-mod=mod']"),
        (DOCKERFILE.replace("-trimpath", "-toolexec=/bin/x"), "go build flags"),
        (DOCKERFILE.replace("-o /out/coredns .", "-o out/coredns ."), "absolute path"),
        (DOCKERFILE.replace("-o /out/coredns .", "-o /out/coredns ./..."), "RUN [ENV=value"),
        (DOCKERFILE.replace(GO_BUILD, "RUN go install ./..."), "RUN [ENV=value"),
        (DOCKERFILE.replace("WORKDIR /src", "WORKDIR /go"), "the module's directory, /src"),
        (
            DOCKERFILE.replace(GO_BUILD, f"{GO_BUILD}\nRUN strip /out/coredns"),
            "the build stage is COPY <module>/",
        ),
        (
            DOCKERFILE.replace("USER 10001:10001", "RUN chmod 0500 /coredns\nUSER 10001:10001"),
            "the scratch stage only COPY --from=build",
        ),
        (
            DOCKERFILE.replace("COPY --from=build /out/coredns", "COPY --from=build /bin/sh"),
            "copy the go build's output",
        ),
        (
            DOCKERFILE.replace("/out/coredns /coredns", "/out/coredns /usr/bin/"),
            "absolute file path",
        ),
        (
            DOCKERFILE.replace("COPY provisioner/devcluster/coredns/ /src/", "COPY ../ /src/"),
            "of the build context only",
        ),
        (
            DOCKERFILE.replace(
                "COPY provisioner/devcluster/coredns/ /src/",
                "COPY provisioner/devcluster/coredns/main.go /src/",
            ),
            "the one module directory",
        ),
        (DOCKERFILE.replace("FROM golang:1.26.8-trixie", "FROM golang:latest"), "golang:<version>"),
        (DOCKERFILE.replace('ENTRYPOINT ["/coredns"]', "ENTRYPOINT /coredns"), "JSON (exec)"),
        (DOCKERFILE.replace("USER 10001:10001", "WORKDIR /data\nUSER 10001:10001"), "no WORKDIR"),
    ],
)
def test_steps_the_local_build_cannot_follow_are_refused(dockerfile: str, refused: str) -> None:
    assert dockerfile != DOCKERFILE
    with pytest.raises(DevClusterError, match=r"Dockerfile line \d+: ") as error:
        go_image_recipe(dockerfile)

    assert refused in str(error.value)


@pytest.mark.parametrize(
    "dockerfile",
    [
        DOCKERFILE.replace("FROM scratch", "FROM debian:trixie-slim"),
        DOCKERFILE.replace(" AS build", ""),
        DOCKERFILE.replace("FROM scratch", "FROM scratch AS runtime"),
        f"{DOCKERFILE}\nFROM scratch\n",
    ],
)
def test_stages_out_of_shape_are_refused(dockerfile: str) -> None:
    with pytest.raises(DevClusterError, match="two stages: 'FROM golang:<version>"):
        go_image_recipe(dockerfile)


def test_a_missing_binary_copy_is_named() -> None:
    without = DOCKERFILE.replace("COPY --from=build /out/coredns /coredns\n", "")

    with pytest.raises(DevClusterError, match="lacks: COPY --from=build"):
        go_image_recipe(without)


@dataclass(frozen=True)
class _ElsewhereImage(LocalImage):
    """An image whose Dockerfile is a test's file (the build context is still the repository)."""

    path: Path = Path()

    @property
    def dockerfile(self) -> Path:
        return self.path


def test_a_go_on_path_other_than_the_bases_release_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.replace("golang:1.26.8-trixie", "golang:1.0.0-trixie"))
    image = _ElsewhereImage("dns", DNS.ref, dockerfile)
    found = images.host_go_version()

    with pytest.raises(DevClusterError) as error:
        images.build_image(image, tmp_path, lambda _: None)

    assert str(error.value).startswith(
        f"images/dns/Dockerfile builds with golang:1.0.0-trixie (its FROM line), the Go on PATH "
        f"is {found}: install Go 1.0.0"
    )
    assert not list((tmp_path / "images").glob("*"))  # nothing cached, no build directory left
