"""Container images for environments, built once per fingerprint on the daemon that runs the job.

* no environment, or one with neither pip packages nor a Dockerfile (user-managed included): the
  base image (``docker.base_image`` or the target's default image) is used as it is, pulled first
  when the daemon lacks it;
* pip packages and/or ``docker.base_dockerfile``: an image tagged ``training-runs/env:<fingerprint>``
  is built from the Dockerfile (or ``FROM <base image>``) with the requirements installed on top
  into a virtual environment that sees the base image's packages (``--system-site-packages``).

The fingerprint covers the base image's id (or the Dockerfile, its build context and the ids of the
images it starts ``FROM``), the requirements and the content of local wheel files they name, so a
second run builds nothing and a changed requirement builds a new tag. A build runs under a file
lock per fingerprint (concurrent runs on a machine build an image once) and streams its log to a
file that becomes the run's ``system_logs/image_build.log``. Local files named by requirements
(``/path/pkg.whl``, ``file://`` URLs, ``--find-links DIR``) travel in the build context, so a remote
daemon gets them too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from airflow_provider.core.environments.requirement_files import localize_requirements
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import state_dir

__all__ = ["IMAGE_REPOSITORY", "ImageBuilder", "ResolvedImage"]

IMAGE_REPOSITORY = "training-runs/env"
ENV_PREFIX = "/opt/training-runs/env"
BUILD_FOLDER = ".training-runs"
IN_IMAGE_BUILD_FOLDER = "/opt/training-runs/build"
LABEL_FINGERPRINT = "training.environment.fingerprint"
LABEL_ENVIRONMENT = "training.environment.name"
_LAYOUT_VERSION = "1"  # bump when the generated Dockerfile changes meaning
_LOG_TAIL_LINES = 40
_FROM_LINE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?",
                        re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ResolvedImage:
    """The image a run's container starts from.

    :param image: the tag (or base image reference) to create the container from.
    :param image_id: the image's id on the daemon.
    :param python: the interpreter inside the image.
    :param fingerprint: the environment's fingerprint.
    :param built: True when this call built the image.
    :param build_log: the build log, when this call built the image.
    """

    image: str
    image_id: str
    python: str
    fingerprint: str
    built: bool
    build_log: Path | None


@dataclass
class _BuildContext:
    """The files of a build context, by their path in the tar."""

    files: dict[str, bytes] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, content: bytes) -> None:
        self.files[name] = content
        self.digests[name] = hashlib.sha256(content).hexdigest()

    def tar(self) -> io.BytesIO:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name in sorted(self.files):
                info = tarfile.TarInfo(name)
                info.size = len(self.files[name])
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(self.files[name]))
        archive.seek(0)
        return archive


class ImageBuilder:
    """Finds or builds the image of an environment on one daemon.

    :param client: a connected ``docker.DockerClient``.
    :param default_image: the image for environments that name none.
    :param python: the interpreter inside base images.
    :param registry_auth: credentials for pulling base images (username, password, serveraddress).
    :param build_timeout_seconds: a build that prints nothing for this long fails.
    """

    def __init__(self, client: Any, default_image: str, python: str, registry_auth: dict[str, str] | None = None,
                 build_timeout_seconds: float = 1800.0) -> None:
        self.client = client
        self.default_image = default_image
        self.python = python
        self.registry_auth = registry_auth
        self.build_timeout_seconds = build_timeout_seconds

    def resolve(self, environment: Environment | None) -> ResolvedImage:
        """The image for ``environment``, built now if it is not on the daemon yet.

        :param environment: the run's environment (None: the default image as it is).
        :raises ConfigurationError: a base image that is missing and cannot be pulled, a bad build context.
        :raises EnvironmentBuildError: the Dockerfile or the pip install failed (with the log tail).
        """
        docker_section = environment.docker if environment is not None else None
        pip = environment is not None and environment.kind == "pip"
        requirements = environment.normalized_requirements() if environment is not None and pip else []
        dockerfile = docker_section.base_dockerfile if docker_section is not None else None
        if not requirements and dockerfile is None:
            return self._as_is(environment)
        assert environment is not None
        context = _BuildContext()
        if dockerfile is not None:
            base_payload = self._dockerfile_base(dockerfile, docker_section.build_context if docker_section else None,
                                                 context)
        else:
            base_image = (docker_section.base_image if docker_section is not None else None) or self.default_image
            base_id = self._ensure_present(base_image, _base_field(environment))
            dockerfile = f"FROM {base_image}\n"
            base_payload = {"base_image_id": base_id}
        lines = _stage_requirements(requirements, context)
        fingerprint = _fingerprint({"base": base_payload, "requirements": lines, "python": self.python,
                                    "files": {k: v for k, v in context.digests.items() if "/wheels/" in k
                                              or "/links/" in k}, "layout": _LAYOUT_VERSION})
        python = f"{ENV_PREFIX}/bin/python" if lines else self.python
        context.add(f"{BUILD_FOLDER}/Dockerfile", _dockerfile(dockerfile, lines, self.python, environment.name,
                                                              fingerprint).encode())
        tag = f"{IMAGE_REPOSITORY}:{fingerprint[:32]}"
        found = self._image_id(tag)
        if found is not None:
            return ResolvedImage(tag, found, python, fingerprint, False, None)
        lock_path = state_dir() / "locks" / f"image-{fingerprint}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_path), timeout=2 * self.build_timeout_seconds):
                found = self._image_id(tag)  # built by whoever held the lock
                if found is not None:
                    return ResolvedImage(tag, found, python, fingerprint, False, None)
                image_id, log_path = self._build(tag, context, environment, fingerprint)
        except Timeout as exc:
            raise EnvironmentBuildError(
                f"another process has been building image {tag} for over {2 * self.build_timeout_seconds:g} s "
                f"(lock {lock_path}); stop that build or remove the lock file"
            ) from exc
        return ResolvedImage(tag, image_id, python, fingerprint, True, log_path)

    # ------------------------------------------------------------------ base images
    def _as_is(self, environment: Environment | None) -> ResolvedImage:
        image = (environment.docker.base_image if environment is not None else None) or self.default_image
        python = (environment.python.interpreter_path if environment is not None else None) or self.python
        image_id = self._ensure_present(image, _base_field(environment))
        payload = {"kind": "current" if environment is None else environment.kind, "image_id": image_id,
                   "python": python}
        return ResolvedImage(image, image_id, python, _fingerprint(payload), False, None)

    def _image_id(self, reference: str) -> str | None:
        import docker

        try:
            return str(self.client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            return None

    def _ensure_present(self, image: str, field_name: str) -> str:
        """The id of ``image`` on the daemon, pulling it (with the registry credentials) if missing."""
        found = self._image_id(image)
        if found is not None:
            return found
        repository, tag = _split_reference(image)
        try:
            pulled = self.client.images.pull(repository, tag=tag, auth_config=self.registry_auth or None)
        except Exception as exc:
            raise ConfigurationError(
                field_name,
                f"image {image!r} is not on the Docker daemon, and pulling it failed: {_short(exc)}.",
                "when no registry is reachable, build or load the image on the daemon first (docker build, "
                "docker load); otherwise check the image name and the connection's registry credentials "
                "(login, password, extra 'registry').",
            ) from exc
        return str(pulled.id)

    def _dockerfile_base(self, dockerfile: str, build_context: str | None, context: _BuildContext) -> dict[str, Any]:
        """Add the user's build context to ``context``; what identifies the Dockerfile's result."""
        if not isinstance(dockerfile, str) or not _FROM_LINE.search(dockerfile):
            raise ConfigurationError("environment.docker.base_dockerfile", "has no FROM line.",
                                     "pass the Dockerfile's text (not its path), starting FROM an image.")
        if build_context is not None:
            folder = Path(build_context)
            if not folder.is_dir():
                raise ConfigurationError("environment.docker.build_context", f"{build_context!r} is not a folder.",
                                         "pass the path of the folder the Dockerfile's COPY lines read from.")
            for path, relative in _context_files(folder):
                if relative.startswith(f"{BUILD_FOLDER}/"):
                    continue
                context.add(relative, path.read_bytes())
        stages: set[str] = set()
        bases: dict[str, str | None] = {}
        for match in _FROM_LINE.finditer(dockerfile):
            image = match.group("image")
            if image.lower() not in stages and image.lower() != "scratch":
                bases[image] = self._image_id(image)  # None: the build pulls it
            if match.group("stage"):
                stages.add(match.group("stage").lower())
        if any(image_id is None for image_id in bases.values()) and self.registry_auth:
            with contextlib.suppress(Exception):  # the build's own pull reports a failure, naming the image
                self.client.login(**self.registry_auth)
        return {"dockerfile": dockerfile, "context": dict(sorted(context.digests.items())), "from": bases}

    # ------------------------------------------------------------------ building
    def _build(self, tag: str, context: _BuildContext, environment: Environment,
               fingerprint: str) -> tuple[str, Path]:
        folder = state_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"image_build-{fingerprint[:16]}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        error: str | None = None
        image_id: str | None = None
        step = ""
        started = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"building {tag} for environment {environment.name!r}\n--- Dockerfile ---\n"
                      f"{context.files[f'{BUILD_FOLDER}/Dockerfile'].decode()}--- build ---\n")
            try:
                for chunk in self.client.api.build(
                    fileobj=context.tar(), custom_context=True, dockerfile=f"{BUILD_FOLDER}/Dockerfile", tag=tag,
                    rm=True, forcerm=True, decode=True, timeout=self.build_timeout_seconds,
                    labels={LABEL_FINGERPRINT: fingerprint, LABEL_ENVIRONMENT: environment.name},
                ):
                    text = str(chunk.get("stream") or chunk.get("status") or "")
                    if text.startswith("Step "):
                        step = text
                    log.write(text if text.endswith("\n") or not text else text + "\n")
                    if "error" in chunk:
                        error = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
                        log.write(f"ERROR: {error}\n")
                    if "aux" in chunk and "ID" in chunk["aux"]:
                        image_id = str(chunk["aux"]["ID"])
            except Exception as exc:  # the daemon went away, the build went silent for too long
                error = f"{type(exc).__name__}: {exc}"
                log.write(f"ERROR: {error}\n")
            log.write(f"--- {'failed' if error else 'built'} in {time.monotonic() - started:.1f} s ---\n")
        if error is None:
            image_id = image_id or self._image_id(tag)
            if image_id is None:
                error = "the daemon reported no image"
        if error is not None or image_id is None:
            failing = ("environment.python.pip_packages" if ENV_PREFIX in step
                       else "environment.docker.base_dockerfile" if environment.docker.base_dockerfile
                       else "environment.docker.base_image")
            raise EnvironmentBuildError(
                f"building the image of environment {environment.name!r} failed at {failing} "
                f"({step.strip() or 'start'}): {error}", _tail(log_path), log_path, "image_build.log",
            )
        return image_id, log_path


def _dockerfile(base: str, requirements: list[str], python: str, name: str, fingerprint: str) -> str:
    text = base if base.endswith("\n") else base + "\n"
    if requirements:
        pip = f"--no-input --disable-pip-version-check --no-cache-dir -r {IN_IMAGE_BUILD_FOLDER}/requirements.txt"
        text += (
            f"COPY {BUILD_FOLDER}/ {IN_IMAGE_BUILD_FOLDER}/\n"
            f"RUN {python} -m venv --system-site-packages --without-pip {ENV_PREFIX} \\\n"
            f" && if {python} -m pip --version >/dev/null 2>&1; then {python} -m pip --python {ENV_PREFIX}/bin/python "
            f"install {pip}; \\\n"
            f"    else {ENV_PREFIX}/bin/python -m ensurepip && {ENV_PREFIX}/bin/python -m pip install {pip}; fi\n"
        )
    return text + f"LABEL {LABEL_ENVIRONMENT}={json.dumps(name)} {LABEL_FINGERPRINT}={fingerprint}\n"


def _stage_requirements(requirements: list[str], context: _BuildContext) -> list[str]:
    """Copy local files the requirements name into the build context; the rewritten lines."""
    lines, files = localize_requirements(requirements, IN_IMAGE_BUILD_FOLDER)
    for relative, content in files.items():
        context.add(f"{BUILD_FOLDER}/{relative}", content)
    context.add(f"{BUILD_FOLDER}/requirements.txt", ("\n".join(lines) + "\n").encode())
    return lines


def _context_files(folder: Path) -> list[tuple[Path, str]]:
    """The files of a build context, without those its ``.dockerignore`` excludes."""
    import pathspec

    ignore = folder / ".dockerignore"
    spec = pathspec.PathSpec.from_lines("gitwildmatch", ignore.read_text().splitlines() if ignore.exists() else [])
    found: list[tuple[Path, str]] = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if not spec.match_file(relative):
                found.append((path, relative))
    return sorted(found, key=lambda item: item[1])


def _split_reference(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


def _base_field(environment: Environment | None) -> str:
    if environment is not None and environment.docker.base_image:
        return "environment.docker.base_image"
    return "compute target image (the connection's extra 'image')"


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    return text if len(text) < 400 else text[:400] + "..."


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-_LOG_TAIL_LINES:])
