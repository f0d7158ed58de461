"""ArtifactStore: versioned artifact directories that a crash at any instant leaves consistent.

Layout under `root`:

    CURRENT           the current version's name + newline, only ever replaced by rename
    versions/vNNNNNN  complete artifacts, each appeared there by one rename
    .staging/         half-written publishes and half-deleted versions (cleaned under the lock)
    .store.lock       flock held while publishing, pruning or moving CURRENT
    .build.lock       flock held by the one process allowed to build (holder's pid inside)

Readers (`load`, `verify`, `versions`, `current`) never take a lock: everything they can see
was made visible by an atomic rename of a fully written, fsynced file or directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecseq.artifacts.bundle import (
    ModelBundle,
    bundle_files,
    check_bundle,
    golden_windows,
)
from ecseq.artifacts.manifest import build_manifest, jsonable, manifest_bytes
from ecseq.artifacts.names import (
    MANIFEST,
    REQUIRED_FILES,
    ArtifactError,
    is_version_name,
    unsafe_name_problem,
    version_name,
    version_number,
)
from ecseq.artifacts.reader import (
    MAX_MANIFEST_BYTES,
    NotARegularFile,
    read_artifact,
    read_manifest,
    read_regular_file,
)
from ecseq.scoring import Scorer

log = logging.getLogger("ecseq.artifacts")

CURRENT = "CURRENT"
VERSIONS = "versions"
STAGING = ".staging"
STORE_LOCK = ".store.lock"
BUILD_LOCK = ".build.lock"
MAX_CURRENT_BYTES = 64  # a version name and a newline


class StoreBusy(Exception):
    """The build lock is held by another process; the message names its pid and the lock file."""


@dataclass(frozen=True)
class Published:
    version: str
    path: Path
    manifest_sha256: str

    def announcement(self) -> dict:
        return {"version": self.version, "path": str(self.path), "manifest_sha256": self.manifest_sha256}


@dataclass(frozen=True)
class LoadedArtifact:
    version: str
    path: Path
    manifest: dict
    manifest_sha256: str
    bundle: ModelBundle
    scorer: Scorer

    def announcement(self) -> dict:
        return {"version": self.version, "path": str(self.path), "manifest_sha256": self.manifest_sha256}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike, keep: int = 5) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive int, got {keep!r}")
        self.root = Path(root).absolute()
        self.keep = keep
        self._versions = self.root / VERSIONS
        self._staging = self.root / STAGING
        self._versions.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r}, keep={self.keep})"

    # -- reading (no lock) ---------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Complete versions, oldest first (anything under versions/ not named vNNNNNN is ignored)."""
        names = [entry.name for entry in os.scandir(self._versions)
                 if is_version_name(entry.name) and entry.is_dir(follow_symlinks=False)]
        return sorted(names, key=version_number)

    def current(self) -> str | None:
        """The version CURRENT points at, None if there is no CURRENT yet; ArtifactError
        ``bad_current`` if it is anything but a small regular file holding a version name."""
        try:
            raw = read_regular_file(self.root / CURRENT, MAX_CURRENT_BYTES)
        except FileNotFoundError:
            return None
        except NotARegularFile:
            raise self._bad_current("is not a regular file") from None
        except OSError as exc:
            what = "a symlink" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
            raise self._bad_current(f"is {what}") from None
        text = raw.decode("utf-8", errors="replace").strip()
        if len(raw) > MAX_CURRENT_BYTES or not is_version_name(text):
            raise self._bad_current(f"holds {text[:40]!r}, not a version name")
        return text

    def _bad_current(self, problem: str) -> ArtifactError:
        return ArtifactError("bad_current", f"artifact store {self.root}: {CURRENT} {problem} "
                                            "(`ecseq artifacts rollback` points it at the newest good version)")

    def path(self, version: str) -> Path:
        return self._versions / version

    def manifest(self, version: str) -> dict:
        """The parsed manifest of `version` (manifest-level checks only; files are not read)."""
        self._check_name(version)
        try:
            return read_manifest(self.path(version), version)[0]
        except ArtifactError as exc:
            log.warning("refused %s: %s", version, exc)
            raise

    def load(self, version: str | None = None) -> LoadedArtifact:
        """Verify `version` (None: whatever CURRENT names) completely and build its scorer."""
        if version is not None:
            return self._verify(version)
        for _ in range(3):
            current = self.current()
            if current is None:
                exc = ArtifactError("not_found", f"artifact store {self.root}: no {CURRENT} (nothing published)")
                log.warning("refused load: %s", exc)
                raise exc
            try:
                return self._verify(current)
            except ArtifactError as exc:
                # CURRENT moved on and the old version was pruned while we read it: read the new one
                if exc.reason in ("not_found", "missing_manifest", "missing_file") and self.current() != current:
                    continue
                raise
        return self._verify(self.current() or "")

    def verify(self, version: str) -> LoadedArtifact:
        return self._verify(version)

    def _check_name(self, version: object) -> None:
        if not is_version_name(version):
            exc = ArtifactError("not_found", f"artifact {version!r}: not a version name (vNNNNNN)")
            log.warning("refused %r: %s", version, exc)
            raise exc

    def _verify(self, version: str) -> LoadedArtifact:
        self._check_name(version)
        path = self.path(version)
        try:
            try:
                manifest, sha, bundle, scorer = read_artifact(path, version)
            except OSError as exc:  # permissions, I/O errors: a refusal like any other
                raise ArtifactError("missing_file", f"artifact {version}: cannot be read ({exc})", version) from None
        except ArtifactError as exc:
            log.warning("refused %s [%s]: %s", version, exc.reason, exc)
            raise
        return LoadedArtifact(version, path, manifest, sha, bundle, scorer)

    def fingerprint(self, version: str) -> str:
        """A digest of `version` as it is on disk now (its manifest's bytes and every entry's size,
        time and inode) without verifying anything: a refused version is not verified again
        (a load costs a full read and the golden scoring) until this changes."""
        digest = hashlib.sha256()
        path = self.path(version)
        try:
            with os.scandir(path) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    st = entry.stat(follow_symlinks=False)
                    digest.update(f"{entry.name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
            digest.update(read_regular_file(path / MANIFEST, MAX_MANIFEST_BYTES))
        except OSError as exc:
            digest.update(f"unreadable: {exc.errno}".encode())
        return digest.hexdigest()

    # -- writing (store lock) ------------------------------------------------------------------

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        fd = os.open(self.root / STORE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def publish(self, bundle: ModelBundle, golden: np.ndarray, *, parent: str | None, encoder_version: str | None,
                data: dict, metrics: dict, extra_files: Mapping[str, bytes] = {},
                make_current: bool = True) -> Published:
        """Write `bundle` as the next version, atomically; optionally make it CURRENT; prune.

        The staged directory is verified exactly as `load` would (golden windows re-scored from
        the files on disk) before it is renamed into versions/, so a version that appears there
        always loads; a refusal raises ArtifactError and leaves nothing behind.
        """
        if not isinstance(bundle, ModelBundle):
            raise TypeError(f"bundle must be a ModelBundle, got {type(bundle).__name__}")
        check_bundle(bundle)
        windows = golden_windows(bundle, golden)
        for label, value in (("parent", parent), ("encoder_version", encoder_version)):
            if value is not None and not is_version_name(value):
                raise ValueError(f"{label} must be None or a version name, got {value!r}")
        data_json, metrics_json = jsonable(data, "data"), jsonable(metrics, "metrics")
        if not isinstance(data_json, dict) or not isinstance(metrics_json, dict):
            raise TypeError("data and metrics must be dicts")
        data, metrics = data_json, metrics_json
        extras = {}
        for name, content in extra_files.items():
            problem = unsafe_name_problem(name)
            if problem is not None or name.startswith("."):
                raise ValueError(f"extra file name {name!r} is not a plain file name ({problem or 'hidden'})")
            if name in REQUIRED_FILES or name == MANIFEST:
                raise ValueError(f"extra file name {name!r} is reserved for the artifact itself")
            if not isinstance(content, (bytes, bytearray, memoryview)):
                raise TypeError(f"extra file {name!r} must be bytes, got {type(content).__name__}")
            extras[name] = bytes(content)
        files = {**bundle_files(bundle, windows), **extras}

        with self._store_lock():
            self._clean_staging()
            existing = [version_number(v) for v in self.versions()]
            current = self._current_or_none()
            if current is not None:
                existing.append(version_number(current))
            version = version_name(max(existing, default=0) + 1)
            manifest = build_manifest(bundle, version, parent=parent, encoder_version=encoder_version or version,
                                      data=data, metrics=metrics, files=files)
            raw = manifest_bytes(manifest)
            stage = self._staging / f"{version}.{os.getpid()}"
            target = self.path(version)
            try:
                stage.mkdir()
                for name, content in files.items():
                    _write_file(stage / name, content)
                _write_file(stage / MANIFEST, raw)  # last: a directory without it is never complete
                _fsync_dir(stage)
                _, sha, _, _ = read_artifact(stage, version)
                if os.path.lexists(target):
                    raise FileExistsError(f"{target} already exists")
                os.rename(stage, target)
            except BaseException as exc:
                shutil.rmtree(stage, ignore_errors=True)
                if isinstance(exc, ArtifactError):
                    log.warning("refused to publish %s [%s]: %s", version, exc.reason, exc)
                raise
            _fsync_dir(self._versions)
            log.info("published %s (parent %s, encoder %s, %d files, manifest %s)", version, parent,
                     encoder_version or version, len(files) + 1, sha[:12])
            if make_current:
                self._write_current(version, reason="publish")
            self._prune()
        return Published(version, target, sha)

    def _current_or_none(self) -> str | None:
        """current(), but None when CURRENT is unreadable garbage (for numbering and pruning)."""
        try:
            return self.current()
        except ArtifactError:
            return None

    def set_current(self, version: str) -> LoadedArtifact:
        """Point CURRENT at `version` after verifying it; a bad version is refused and CURRENT kept."""
        with self._store_lock():
            loaded = self._verify(version)
            self._write_current(version, reason="set_current")
        return loaded

    def rollback(self, version: str | None = None) -> LoadedArtifact:
        """Point CURRENT back at `version`, or (None) at the newest older version that verifies; a
        broken CURRENT (unreadable, not a version name) is repaired with the newest that verifies."""
        loaded: LoadedArtifact | None  # None until a candidate verifies (the else branch)
        with self._store_lock():
            if version is not None:
                loaded = self._verify(version)
            else:
                try:
                    current = self.current()
                    if current is None:
                        raise ArtifactError("not_found", f"artifact store {self.root}: no {CURRENT} to roll back "
                                                         "from")
                    below = version_number(current)
                except ArtifactError as broken:
                    if broken.reason != "bad_current":
                        raise
                    current, below = "a broken CURRENT", None
                loaded = None
                for candidate in reversed(self.versions()):
                    if below is not None and version_number(candidate) >= below:
                        continue
                    try:
                        loaded = self._verify(candidate)
                        break
                    except ArtifactError:
                        continue  # already logged; try the next older one
                if loaded is None:
                    none_left = ArtifactError("not_found", f"artifact store {self.root}: no version older than "
                                                           f"{current} verifies")
                    log.warning("refused rollback: %s", none_left)
                    raise none_left
            self._write_current(loaded.version, reason="rollback")
        return loaded

    def _write_current(self, version: str, reason: str) -> None:
        previous = self._current_or_none()
        tmp = self.root / f"{CURRENT}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _write_file(tmp, f"{version}\n".encode())
        current = self.root / CURRENT
        if current.is_dir() and not current.is_symlink():  # a broken CURRENT being repaired: rename cannot replace it
            broken = self._staging / f"{CURRENT}.broken.{os.getpid()}"
            os.rename(current, broken)
            _remove(broken)
        os.replace(tmp, current)
        _fsync_dir(self.root)
        log.info("%s: CURRENT %s -> %s", reason, previous, version)

    def _clean_staging(self) -> None:
        """Remove leftovers of publishes/prunes whose process died (only called under the lock)."""
        leftovers = sorted(os.listdir(self._staging))
        for name in leftovers:
            _remove(self._staging / name)
        if leftovers:
            _fsync_dir(self._staging)
            log.info("cleaned %d staging leftover(s): %s", len(leftovers), ", ".join(leftovers))

    def _prune(self) -> None:
        """Keep the newest `keep` versions and CURRENT's; the rest leave versions/ by one rename."""
        versions = self.versions()
        keep = set(versions[-self.keep:])
        current = self._current_or_none()
        if current is not None:
            keep.add(current)
        for version in versions:
            if version in keep:
                continue
            trash = self._staging / f"{version}.deleting.{os.getpid()}"
            os.rename(self.path(version), trash)
            _fsync_dir(self._versions)
            shutil.rmtree(trash, ignore_errors=True)
            log.info("pruned %s (keeping %d newest + current %s)", version, self.keep, current)

    @contextlib.contextmanager
    def build_lock(self, wait: bool = False) -> Iterator[None]:
        """Whole-build lock: one builder per store. StoreBusy if held elsewhere and not `wait`."""
        path = self.root / BUILD_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
                raise StoreBusy(f"another builder (pid {holder}) holds {path}") from None
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
