"""The pipeline's container images: names with reproducible tags, and the constraints they install from.

Tags. params.yaml `pipeline.image` / `pipeline.gpu_image` name image
repositories. Without a tag, the tag is derived from the code:
`<package version>-g<12 hex of the git commit>`, or, when the checkout differs
from that commit, `<version>-g<commit>-dirty-<12 hex>`: the hex is a
fingerprint of what differs (the diff of tracked files against HEAD, and the
path and content of every untracked file an image copies: under a Dockerfile's
COPY sources, not ignored by git nor by that Dockerfile's .dockerignore), so
adding or editing such a file gives a new tag. `petseg pipeline image` prints it for
`docker build -t`, and compile writes it into every step, so the compiled
pipeline names the exact image its code was built into. KFP's cache key
includes the image, so a new commit means new tags and no stale cache hits. A
tag given explicitly (or a digest, `@sha256:...`) is used as is.

A derived tag is reproducible only for a clean commit: a `-dirty-` tag names a
working tree no commit holds (and files git ignores but an image copies are not
in its fingerprint), and outside a git checkout (tag `<version>-nogit`) the same
tag can name different code, so compile turns caching off for every step (Tag.cacheable).

Constraints. `pipeline/constraints.txt` pins every package the images install
(petseg's dependencies with the s3 and gcs extras, transitively) to the version
in the environment the tests ran in; the Dockerfiles install with
`pip install -c pipeline/constraints.txt`. Regenerate it after changing
dependencies with `python -m petseg.pipeline.images constraints`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from petseg.components.contracts.lineage import git_state

PACKAGE = "petseg"
IMAGE_EXTRAS = ("s3", "gcs")
CONSTRAINTS_FILE = Path(__file__).resolve().parent / "constraints.txt"
# Where the source checkout is when petseg is installed editable (pipeline/ is one of its folders).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Tag:
    """A derived image tag and whether it names one fixed piece of code."""

    value: str
    commit: str | None
    cacheable: bool


def package_version() -> str:
    return importlib.metadata.version(PACKAGE)


def code_tag(repo_dir: Path = SOURCE_ROOT) -> Tag:
    """`<version>-g<commit12>`, `<version>-g<commit12>-dirty-<fingerprint12>`, or `<version>-nogit` outside git."""
    version = package_version()
    commit, dirty = git_state(repo_dir)
    if commit is None:
        return Tag(f"{version}-nogit", None, cacheable=False)
    untracked = untracked_image_files(repo_dir)
    if not dirty and not untracked:
        return Tag(f"{version}-g{commit[:12]}", commit, cacheable=True)
    fingerprint = working_tree_fingerprint(repo_dir, untracked)
    return Tag(f"{version}-g{commit[:12]}-dirty-{fingerprint[:12]}", commit, cacheable=False)


def _git(repo_dir: Path, *args: str) -> bytes:
    """stdout of a git command in `repo_dir` (empty if git fails: the tag then counts nothing for it)."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return b""
    return proc.stdout if proc.returncode == 0 else b""


def dockerfiles(repo_dir: Path) -> list[Path]:
    """The images' Dockerfiles: pipeline/Dockerfile, pipeline/Dockerfile.gpu, ..."""
    return sorted(p for p in (repo_dir / "pipeline").glob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def copy_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY/ADD instructions read (not `--from` another stage)."""
    joined = re.sub(r"\\\n", " ", dockerfile_text)
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.strip().split(None, 1)
        if len(words) != 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources += [p.removeprefix("./") or "." for p in paths[:-1]]
    return sources


def _ignore_patterns(dockerfile: Path, repo_dir: Path) -> list[str]:
    """The .dockerignore patterns of a build with `-f dockerfile`: <Dockerfile>.dockerignore, else the context's."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), repo_dir / ".dockerignore"):
        if candidate.is_file():
            lines = (line.strip() for line in candidate.read_text().splitlines())
            return [line for line in lines if line and not line.startswith("#")]
    return []


def untracked_image_files(repo_dir: Path) -> list[str]:
    """Untracked files (not ignored by git) that some image's build would copy, sorted; [] outside git.

    For each Dockerfile: untracked files under its COPY sources, less those its
    .dockerignore excludes (Docker's own matching: docker-py's PatternMatcher).
    """
    from docker.utils.build import PatternMatcher

    found: set[str] = set()
    for dockerfile in dockerfiles(repo_dir):
        sources = copy_sources(dockerfile.read_text())
        if not sources:
            continue
        listed = _git(repo_dir, "ls-files", "-z", "--others", "--exclude-standard", "--", *sources)
        excluded = PatternMatcher(_ignore_patterns(dockerfile, repo_dir))
        found.update(name for name in listed.decode().split("\0") if name and not excluded.matches(name))
    return sorted(found)


def working_tree_fingerprint(repo_dir: Path, untracked: list[str]) -> str:
    """sha256 hex of how the working tree differs from HEAD: tracked changes, and `untracked` files' names and bytes."""
    digest = hashlib.sha256(_git(repo_dir, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color"))
    for name in untracked:
        digest.update(b"\0" + name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256((repo_dir / name).read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


def has_tag(image: str) -> bool:
    """Whether an image reference already names a tag or a digest (`repo:tag`, `repo@sha256:...`)."""
    last = image.rsplit("/", 1)[-1]
    return ":" in last or "@" in image


def resolve_image(image: str, tag: Tag) -> str:
    """`image` with the derived tag appended unless it has a tag or digest of its own."""
    return image if has_tag(image) else f"{image}:{tag.value}"


# ------------------------------------------------------------------ constraints
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(package: str = PACKAGE, extras: tuple[str, ...] = IMAGE_EXTRAS) -> dict[str, str]:
    """{distribution: installed version} for `package[extras]` and everything it requires, transitively.

    Only requirements whose environment markers hold here (this Python, this
    platform) are followed, as pip would; the package itself is left out.
    """
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    queue: list[tuple[str, frozenset[str]]] = [(package, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, wanted = queue.pop()
        if (_norm(name), wanted) in seen:
            continue
        seen.add((_norm(name), wanted))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here: nothing to pin
        if _norm(name) != _norm(package):
            found[_norm(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            queue.append((req.name, frozenset(req.extras)))
    return found


def constraints_text(pins: dict[str, str]) -> str:
    header = (
        "# Generated by `python -m petseg.pipeline.images constraints` from the environment the tests ran in\n"
        f"# (Python {sys.version_info.major}.{sys.version_info.minor}): every package petseg[{','.join(IMAGE_EXTRAS)}] "
        "installs, pinned. The images install with `pip install -c` this file.\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def write_constraints(path: Path = CONSTRAINTS_FILE) -> Path:
    path.write_text(constraints_text(requirement_closure()))
    return path


if __name__ == "__main__":  # python -m petseg.pipeline.images constraints
    if sys.argv[1:] != ["constraints"]:
        sys.exit("usage: python -m petseg.pipeline.images constraints")
    print(f"wrote {write_constraints()}")
