"""Container images for environments, built once per fingerprint on the daemon that runs the job.

* no environment, or one with neither pip packages nor a Dockerfile (user-managed included): the
  base image (``docker.base_image`` or the target's default image) is used as it is, pulled first
  when the daemon lacks it;
* ``docker.base_dockerfile``: an image tagged ``training-runs/env:<fingerprint>`` built from it
  (its fingerprint: the Dockerfile, its build context and the ids of the images it starts ``FROM``);
* pip packages: an image ``FROM`` the base image (or the Dockerfile's image) with the environment's
  lock installed into a virtual environment that sees the base image's packages
  (``--system-site-packages``). The lock is resolved on the submitting side for the image's own
  Python and platform (asked once per image by a short container without network), and its wheels
  travel in the build context: the build installs with ``--no-index`` and needs no package index
  (``install_from="target"``: the image's index gives what is not a local file).
* a conda specification (``conda="rattler"``, or ``"auto"`` with py-rattler here): an image ``FROM``
  the base with a real conda environment at ``/opt/training-runs/env``. It is solved here for the
  image's platform, and the package files, py-rattler's wheel and the ``pip:`` section's wheels
  travel in the build context; :mod:`~airflow_provider.runtime.conda_installer` installs them
  during the build, without any network.

The fingerprint of a package image covers the base image's id and the lock (versions and wheel
hashes), so a second run builds nothing and a changed requirement builds a new tag. A build runs
under a file lock per fingerprint (concurrent runs on a machine build an image once) and streams
its log to a file that becomes the run's ``system_logs/image_build.log``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from filelock import FileLock, Timeout

from airflow_provider.core.environments.conda_builder import (
    CondaMode,
    conda_fingerprint,
    conda_lock_text,
    conda_packages,
    conda_subdir,
    conda_tool_environment,
    pip_lock_for,
    rattler_available,
    solve,
    virtual_packages_for,
)
from airflow_provider.core.environments.interpreters import check_interpreter
from airflow_provider.core.environments.locking import InstallFrom, Lock, TargetPlatform, find_uv, lock_requirements
from airflow_provider.core.environments.spec import MANAGED_KINDS, Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import state_dir

__all__ = ["IMAGE_REPOSITORY", "ImageBuilder", "ResolvedImage"]

log = logging.getLogger(__name__)

IMAGE_REPOSITORY = "training-runs/env"
ENV_PREFIX = "/opt/training-runs/env"
BUILD_FOLDER = ".training-runs"
IN_IMAGE_BUILD_FOLDER = "/opt/training-runs/build"
LABEL_FINGERPRINT = "training.environment.fingerprint"
LABEL_ENVIRONMENT = "training.environment.name"
_RUNTIME_FOLDER = Path(__file__).resolve().parents[2] / "runtime"
_LAYOUT_VERSION = "2"  # bump when the generated Dockerfile changes meaning
_LOG_TAIL_LINES = 40
_FROM_LINE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?",
                        re.IGNORECASE | re.MULTILINE)


_PLATFORM_PROBE = (
    "import json, os, sys\n"
    "try:\n    libc = os.confstr('CS_GNU_LIBC_VERSION')\nexcept (ValueError, OSError):\n    libc = None\n"
    "from importlib import metadata\n"
    "installed = {}\n"
    "for dist in metadata.distributions():\n"
    "    name = dist.metadata['Name']\n"
    "    if name:\n        installed[name.lower()] = dist.version\n"
    "print(json.dumps({'version': sys.version, 'machine': os.uname().machine, 'libc': libc,\n"
    "                  'system': sys.platform, 'implementation': sys.implementation.name, 'installed': installed}))"
)


@dataclass(frozen=True)
class ResolvedImage:
    """The image a run's container starts from.

    :param image: the tag (or base image reference) to create the container from.
    :param image_id: the image's id on the daemon.
    :param python: the interpreter inside the image.
    :param fingerprint: the environment's fingerprint.
    :param built: True when this call built the image.
    :param build_log: the build log, when this call built the image.
    :param lock: the lock installed in the image, for pip environments.
    :param conda_lock: the lock installed in the image, for conda environments built with py-rattler.
    """

    image: str
    image_id: str
    python: str
    fingerprint: str
    built: bool
    build_log: Path | None
    lock: Lock | None = None
    conda_lock: str | None = None
    """For a conda environment: its lock (conda's explicit format, the pip section's pins appended)."""


@dataclass
class _BuildContext:
    """The files of a build context, by their path in the tar (contents in memory, or files on disk)."""

    files: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, content: bytes) -> None:
        self.files[name] = content
        self.digests[name] = hashlib.sha256(content).hexdigest()

    def add_file(self, name: str, path: Path, mode: int = 0o644) -> None:
        """Add a file read only when the tar is written (wheels: no need to hash them again).

        :param name: its path in the context.
        :param path: the file.
        :param mode: its permission bits in the context.
        """
        self.paths[name] = path
        self.modes[name] = mode

    def tar(self) -> IO[bytes]:
        """The context as a tar, spooled to disk past 64 MiB (wheels of gigabytes stay out of memory)."""
        archive = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 - the caller closes it
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name in sorted({*self.files, *self.paths}):
                info = tarfile.TarInfo(name)
                info.mode = self.modes.get(name, 0o644)
                if name in self.files:
                    info.size = len(self.files[name])
                    tar.addfile(info, io.BytesIO(self.files[name]))
                else:
                    info.size = self.paths[name].stat().st_size
                    with self.paths[name].open("rb") as source:
                        tar.addfile(info, source)
        archive.seek(0)
        return archive


class ImageBuilder:
    """Finds or builds the image of an environment on one daemon.

    :param client: a connected ``docker.DockerClient``.
    :param default_image: the image for environments that name none.
    :param python: the interpreter inside base images.
    :param registry_auth: credentials for pulling base images (username, password, serveraddress).
    :param build_timeout_seconds: a build that prints nothing for this long fails.
    :param max_images: the most environment images kept on the daemon; after a build the least
        recently used beyond it are removed (never one a container uses), each removal logged.
    :param conda: how conda specifications are built: ``"rattler"`` (a real conda environment in the
        image, solved here and installed offline by py-rattler during the build), ``"translate"`` (a
        virtual environment from PyPI) or ``"auto"`` (``"rattler"`` when py-rattler is installed here).
    """

    def __init__(self, client: Any, default_image: str, python: str, registry_auth: dict[str, str] | None = None,
                 build_timeout_seconds: float = 1800.0, max_images: int = 20, conda: CondaMode = "auto") -> None:
        self.max_images = max_images
        self.conda = conda
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
        pip = environment is not None and environment.kind in MANAGED_KINDS
        dockerfile = docker_section.base_dockerfile if docker_section is not None else None
        if not pip and dockerfile is None:
            return self._as_is(environment)
        assert environment is not None and docker_section is not None
        if dockerfile is not None:
            base = self._from_dockerfile(environment, dockerfile, docker_section.build_context)
            if not pip:
                return base
            base_image, base_id = base.image, base.image_id
        else:
            base_image = docker_section.base_image or self.default_image
            base_id = self._ensure_present(base_image, _base_field(environment))
        if environment.kind == "conda" and self.conda_mode() == "rattler":
            return self._with_conda(environment, base_id)
        return self._with_packages(environment, base_image, base_id)

    def conda_mode(self) -> Literal["rattler", "translate"]:
        """How conda specifications are built (``"auto"`` decided: py-rattler installed here or not)."""
        if self.conda == "auto":
            return "rattler" if rattler_available() else "translate"
        return self.conda

    def _with_conda(self, environment: Environment, base_id: str) -> ResolvedImage:
        """An image of the base with a real conda environment at :data:`ENV_PREFIX`: solved here for the
        image's platform, its package files (and py-rattler's wheel, and the ``pip:`` section's wheels)
        in the build context, installed by py-rattler during the build without any network."""
        spec = environment.conda_specification()
        assert spec is not None
        platform = self.platform(base_id)
        if platform.system != "linux" or platform.machine not in ("x86_64", "aarch64", "arm64"):
            raise ConfigurationError("environment.python.conda_dependencies",
                                     f"cannot be built in image {base_id[:19]} ({platform.system} on "
                                     f"{platform.machine}): conda environments are built for Linux on x86_64 or "
                                     "aarch64.",
                                     "set the connection extra conda to \"translate\".")
        subdir = conda_subdir(platform.machine)
        virtual = virtual_packages_for(platform.machine, platform.libc, str(self.client.info().get("KernelVersion")))
        solution = solve(spec, subdir, virtual, self.build_timeout_seconds)
        pip_lock = pip_lock_for(spec, solution, platform.machine, platform.libc, "submitter",
                                self.build_timeout_seconds)
        tool_lock = lock_requirements(conda_tool_environment().python.pip_packages, platform, "submitter",
                                      timeout=self.build_timeout_seconds)
        fingerprint = _fingerprint({"base_image_id": base_id, "conda": conda_fingerprint(solution, pip_lock),
                                    "python": self.python, "layout": _LAYOUT_VERSION})
        lock_text = conda_lock_text(spec, solution, pip_lock, subdir)
        context = _BuildContext()
        store = WheelStore()
        files = store.fetch_packages(conda_packages(solution))
        packages = []
        for package, record in zip(conda_packages(solution), solution, strict=True):
            folder = record.get("subdir") or record["url"].rsplit("/", 2)[-2]
            context.add_file(f"{BUILD_FOLDER}/conda/{folder}/{package.filename}", files[package.sha256])
            packages.append({"name": record["name"], "version": record["version"], "build": record["build"],
                             "sha256": record["sha256"], "subdir": folder})
        for name, path in files_to_install(tool_lock, store).items():
            context.add_file(f"{BUILD_FOLDER}/tool-wheels/{name}", path)
        context.add(f"{BUILD_FOLDER}/tool-requirements.txt", ("\n".join(tool_lock.requirement_lines()) + "\n").encode())
        if pip_lock is not None:
            for name, path in files_to_install(pip_lock, store).items():
                context.add_file(f"{BUILD_FOLDER}/wheels/{name}", path)
            context.add(f"{BUILD_FOLDER}/requirements.txt", ("\n".join(pip_lock.requirement_lines()) + "\n").encode())
        for module in ("conda_installer.py", "venv_builder.py"):
            context.add_file(f"{BUILD_FOLDER}/installer/{module}", _RUNTIME_FOLDER / module)
        context.add(f"{BUILD_FOLDER}/request.json", json.dumps({
            "channel": f"{IN_IMAGE_BUILD_FOLDER}/conda", "prefix": ENV_PREFIX, "packages": packages,
            "cache": f"{IN_IMAGE_BUILD_FOLDER}/rattler-cache"}).encode())
        uv = self._uv_for(base_id)
        if uv is not None:
            context.add_file(f"{BUILD_FOLDER}/uv", uv, mode=0o755)
        for folder in ("noarch", "linux-64", "linux-aarch64"):  # the channel's platforms, even when empty
            context.add(f"{BUILD_FOLDER}/conda/{folder}/.keep", b"")
        context.add(f"{BUILD_FOLDER}/Dockerfile", _conda_dockerfile(base_id, self.python, environment.name,
                                                                    fingerprint, uv is not None,
                                                                    pip_lock is not None).encode())
        resolved = self._find_or_build(f"{IMAGE_REPOSITORY}:{fingerprint[:32]}", context, environment, fingerprint,
                                       f"{ENV_PREFIX}/bin/python", "environment.python.conda_dependencies", lock_text)
        return dataclasses.replace(resolved, conda_lock=lock_text)

    def _from_dockerfile(self, environment: Environment, dockerfile: str, build_context: str | None) -> ResolvedImage:
        """The image of the user's Dockerfile (its context and the images it starts FROM count)."""
        context = _BuildContext()
        payload = self._dockerfile_base(dockerfile, build_context, context)
        fingerprint = _fingerprint({"base": payload, "python": self.python, "layout": _LAYOUT_VERSION})
        text = dockerfile if dockerfile.endswith("\n") else dockerfile + "\n"
        context.add(f"{BUILD_FOLDER}/Dockerfile", (text + _labels(environment.name, fingerprint)).encode())
        return self._find_or_build(f"{IMAGE_REPOSITORY}:{fingerprint[:32]}", context, environment, fingerprint,
                                   self.python, "environment.docker.base_dockerfile")

    def _with_packages(self, environment: Environment, base_image: str, base_id: str) -> ResolvedImage:
        """An image of ``base_image`` with the environment's lock installed into a virtual environment."""
        check_interpreter(environment.required_python(), self.platform(base_id).python_version,
                          f"in image {base_image} ({self.python})",
                          "use a base image with that Python (environment.docker.base_image), or name its interpreter "
                          "on the connection (extra 'python')")
        lock = self.lock(environment, base_id)
        context = _BuildContext()
        for name, path in files_to_install(lock, WheelStore()).items():
            context.add_file(f"{BUILD_FOLDER}/wheels/{name}", path)
        context.add(f"{BUILD_FOLDER}/requirements.txt", ("\n".join(lock.requirement_lines()) + "\n").encode())
        fingerprint = _fingerprint({"base_image_id": base_id, "lock": lock.identity(), "python": self.python,
                                    "install_from": lock.install_from, "layout": _LAYOUT_VERSION})
        options = [f"--find-links {IN_IMAGE_BUILD_FOLDER}/wheels", "--no-deps"] + (  # the lock lists every package
            ["--no-index"] if lock.install_from == "submitter" else [])
        uv = self._uv_for(base_id) if lock.install_from == "submitter" else None  # "target": the image's pip config
        if uv is not None:
            context.add_file(f"{BUILD_FOLDER}/uv", uv, mode=0o755)
        context.add(f"{BUILD_FOLDER}/Dockerfile", _dockerfile(base_id, options, self.python, environment.name,
                                                              fingerprint, uv is not None).encode())
        resolved = self._find_or_build(f"{IMAGE_REPOSITORY}:{fingerprint[:32]}", context, environment, fingerprint,
                                       f"{ENV_PREFIX}/bin/python", "environment.python.pip_packages", lock.text())
        return dataclasses.replace(resolved, lock=lock)

    def _uv_for(self, image_id: str) -> Path | None:
        """This machine's uv, when the image can run it (same machine type, glibc): builds take
        seconds instead of pip's tens of seconds; it stays out of the image (a build stage)."""
        here, there = TargetPlatform.current(), self.platform(image_id)
        if there.machine != here.machine or not (there.libc or "").startswith("glibc") or not (
                here.libc or "").startswith("glibc"):
            return None
        found = find_uv()
        return None if found is None else Path(found)

    def lock(self, environment: Environment, image_id: str) -> Lock:
        """The resolved lock of a pip environment for the Python of an image (see :mod:`locking`).

        :param environment: a pip environment.
        :param image_id: the id of the image the environment is installed on: what its Python already
            has (a CUDA build of torch, say) is kept, as pip kept a satisfied requirement.
        """
        install_from: InstallFrom = "target" if environment.python.install_from == "target" else "submitter"
        return lock_requirements(environment.requirements(), self.platform(image_id), install_from,
                                 timeout=self.build_timeout_seconds, provided=self.installed(image_id))

    def platform(self, image_id: str) -> TargetPlatform:
        """The Python and system of an image: asked once (a short container, no network), then kept.

        :param image_id: the image's id on the daemon.
        """
        return TargetPlatform(**{k: v for k, v in self._image_facts(image_id).items() if k != "installed"})

    def installed(self, image_id: str) -> dict[str, str]:
        """The Python distributions of an image's interpreter (name: version), asked with its platform.

        :param image_id: the image's id on the daemon.
        """
        return dict(self._image_facts(image_id).get("installed") or {})

    def _image_facts(self, image_id: str) -> dict[str, Any]:
        import docker

        folder = state_dir() / "image-platforms"
        probe = hashlib.sha256(f"{self.python}\n{_PLATFORM_PROBE}".encode()).hexdigest()[:12]
        path = folder / f"{image_id.replace(':', '-')}-{probe}.json"
        with contextlib.suppress(OSError, ValueError):
            cached: dict[str, Any] = json.loads(path.read_text())
            if "installed" in cached:
                return cached
        try:
            output = self.client.containers.run(image_id, [self.python, "-I", "-c", _PLATFORM_PROBE],  # with site
                                                remove=True, network_disabled=True, stderr=True)
            facts = json.loads(output.decode().strip().splitlines()[-1])
        except (docker.errors.ContainerError, docker.errors.ImageNotFound, ValueError, IndexError) as exc:
            raise ConfigurationError(
                "compute target python (the connection's extra 'python')",
                f"cannot run {self.python!r} in image {image_id[:19]}: {_short(exc)}.",
                "name the image's Python interpreter (e.g. python3) on the connection, or use an image that has one.",
            ) from exc
        platform = TargetPlatform.from_facts(facts["version"], facts["machine"], facts["libc"],
                                             facts.get("system", "linux"), facts.get("implementation", "cpython"))
        record = {**platform.to_dict(), "installed": facts.get("installed") or {}}
        folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)
        return record

    def _find_or_build(self, tag: str, context: _BuildContext, environment: Environment, fingerprint: str,
                       python: str, failing_field: str, lock_text: str = "") -> ResolvedImage:
        found = self._image_id(tag)
        _record_use(tag)
        if found is not None:
            return ResolvedImage(tag, found, python, fingerprint, False, None)
        lock_path = state_dir() / "locks" / f"image-{fingerprint}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_path), timeout=2 * self.build_timeout_seconds):
                found = self._image_id(tag)  # built by whoever held the lock
                if found is not None:
                    return ResolvedImage(tag, found, python, fingerprint, False, None)
                image_id, log_path = self._build(tag, context, environment, fingerprint, failing_field, lock_text)
            self.evict(keep={tag})
        except Timeout as exc:
            raise EnvironmentBuildError(
                f"another process has been building image {tag} for over {2 * self.build_timeout_seconds:g} s "
                f"(lock {lock_path}); stop that build or remove the lock file"
            ) from exc
        return ResolvedImage(tag, image_id, python, fingerprint, True, log_path)

    def evict(self, keep: set[str]) -> list[str]:
        """Remove the least recently used environment images beyond :attr:`max_images` (last use as
        recorded on this machine; never one a container uses: the daemon refuses, and it stays; never
        one this machine has no record of: on a shared daemon, another machine's images are its own).

        :param keep: tags not to remove.
        :return: the removed tags.
        """
        import docker

        tags = [t for image in self.client.images.list(IMAGE_REPOSITORY) for t in image.tags
                if t.startswith(f"{IMAGE_REPOSITORY}:")]
        removed: list[str] = []
        excess = len(tags) - self.max_images
        for tag in sorted(tags, key=lambda t: _last_use(t) or 0.0):
            if excess <= 0:
                break
            if tag in keep or _last_use(tag) is None:  # another machine's image: its users decide
                continue
            try:
                self.client.images.remove(tag, noprune=False)
            except docker.errors.APIError:
                continue  # a container (running or stopped) still uses it
            excess -= 1
            removed.append(tag)
            log.info("Evicted environment image %s (least recently used; more than %d images)", tag,
                     self.max_images)
        return removed

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
               fingerprint: str, failing: str, lock_text: str = "") -> tuple[str, Path]:
        folder = state_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"image_build-{fingerprint[:16]}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        error: str | None = None
        image_id: str | None = None
        step = ""
        started = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"building {tag} for environment {environment.name!r}\n--- Dockerfile ---\n"
                      f"{context.files[f'{BUILD_FOLDER}/Dockerfile'].decode()}")
            if lock_text:
                log.write(f"--- lock ---\n{lock_text}")
            log.write("--- build ---\n")
            archive = context.tar()
            try:
                for chunk in self.client.api.build(
                    fileobj=archive, custom_context=True, dockerfile=f"{BUILD_FOLDER}/Dockerfile", tag=tag,
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
            finally:
                archive.close()
            log.write(f"--- {'failed' if error else 'built'} in {time.monotonic() - started:.1f} s ---\n")
        if error is None:
            image_id = image_id or self._image_id(tag)
            if image_id is None:
                error = "the daemon reported no image"
        if error is not None or image_id is None:
            raise EnvironmentBuildError(
                f"building the image of environment {environment.name!r} failed at {failing} "
                f"({step.strip() or 'start'}): {error}", _tail(log_path), log_path, "image_build.log",
            )
        return image_id, log_path


def _dockerfile(base_id: str, options: list[str], python: str, name: str, fingerprint: str, with_uv: bool) -> str:
    """``FROM`` the base, then the lock installed into a virtual environment that sees the base image's
    packages: with uv from the build context when it was sent (seconds), else with the image's pip.

    One stage: the legacy builder keeps a multi-stage build's first stage as untagged children of the
    base image, which then cannot be removed; the copied wheels stay in the ``COPY`` layer."""
    requirements = f"-r {IN_IMAGE_BUILD_FOLDER}/requirements.txt"
    if with_uv:
        uv = f"{IN_IMAGE_BUILD_FOLDER}/uv"
        install = (f"RUN {uv} venv --quiet --system-site-packages --python {python} {ENV_PREFIX} \\\n"
                   f" && UV_NO_CACHE=1 {uv} pip install --python {ENV_PREFIX}/bin/python {' '.join(options)} "
                   f"{requirements} \\\n")
    else:
        pip = f"--no-input --disable-pip-version-check --no-cache-dir {' '.join(options)} {requirements}"
        install = (
            f"RUN {python} -m venv --system-site-packages --without-pip {ENV_PREFIX} \\\n"
            f" && if {python} -m pip --version >/dev/null 2>&1; then {python} -m pip --python "
            f"{ENV_PREFIX}/bin/python install {pip}; \\\n"
            f"    else {ENV_PREFIX}/bin/python -m ensurepip && {ENV_PREFIX}/bin/python -m pip install {pip}; fi \\\n"
        )
    return (
        f"FROM {base_id}\n"
        f"COPY {BUILD_FOLDER}/ {IN_IMAGE_BUILD_FOLDER}/\n"
        + install
        + f" && rm -rf {IN_IMAGE_BUILD_FOLDER}/wheels {IN_IMAGE_BUILD_FOLDER}/uv\n"
        + _labels(name, fingerprint)
    )


def _conda_dockerfile(base_id: str, python: str, name: str, fingerprint: str, with_uv: bool, with_pip: bool) -> str:
    """``FROM`` the base, then py-rattler into a scratch folder (from its wheel), the conda packages of
    the build context installed with it at :data:`ENV_PREFIX`, and the ``pip:`` section's wheels; the
    scratch files are removed in the same step (the copied files stay in the ``COPY`` layer)."""
    build = IN_IMAGE_BUILD_FOLDER
    tool_options = f"--no-index --find-links {build}/tool-wheels --no-deps --target {build}/tool"
    pip_options = f"--no-index --find-links {build}/wheels --no-deps -r {build}/requirements.txt"
    if with_uv:
        tool = f"UV_NO_CACHE=1 {build}/uv pip install --quiet --python {python} {tool_options}"
        pip = f"UV_NO_CACHE=1 {build}/uv pip install --python {ENV_PREFIX}/bin/python {pip_options}"
    else:
        quiet = "--no-input --disable-pip-version-check --no-cache-dir"
        tool = f"{python} -m pip install {quiet} {tool_options}"
        pip = f"{python} -m pip --python {ENV_PREFIX}/bin/python install {quiet} {pip_options}"
    return (
        f"FROM {base_id}\n"
        f"COPY {BUILD_FOLDER}/ {build}/\n"
        f"RUN {tool} -r {build}/tool-requirements.txt \\\n"
        f" && PYTHONPATH={build}/tool {python} -s {build}/installer/conda_installer.py {build}/request.json \\\n"
        + (f" && {pip} \\\n" if with_pip else "")
        + f" && rm -rf {build}\n"
        + _labels(name, fingerprint)
    )


def _uses_dir() -> Path:
    return state_dir() / "image-uses"


def _record_use(tag: str) -> None:
    folder = _uses_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / tag.replace("/", "_").replace(":", "_")).touch()


def _last_use(tag: str) -> float | None:
    try:
        return (_uses_dir() / tag.replace("/", "_").replace(":", "_")).stat().st_mtime
    except OSError:
        return None  # never used from this machine


def _labels(name: str, fingerprint: str) -> str:
    return f"LABEL {LABEL_ENVIRONMENT}={json.dumps(name)} {LABEL_FINGERPRINT}={fingerprint}\n"


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
