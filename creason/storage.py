"""Run outputs on object storage: `output_dir` may be a URI such as `s3://bucket/runs/sepsis`.

A run's outputs reach the URI two ways:
- **Checkpoints**: Ray Train writes them to `<output_dir>/ray_train` itself (its `storage_path`)
  from whichever node each worker runs on, and reads them back on resume.
- **Everything else** a stage writes (questions, the warm-up model, metrics.jsonl, evaluation
  results and reports, summary.json) goes to a working copy on the local disk (`working_copy`),
  written exactly as for a local `output_dir` (atomically), and is uploaded (`push`) after each
  command and pipeline stage, and by the training loop at every checkpoint. A command first
  downloads what the run holds already (`pull`, all but the checkpoints), so that resume and later
  stages find it on a machine that has never seen the run.

Filesystems are pyarrow's (`pyarrow.fs.FileSystem.from_uri`: s3://, gs://, abfs://, hdfs://),
configured as their own clients are: credentials, region and `AWS_ENDPOINT_URL` (an
S3-compatible server) from the environment, which every node of the cluster needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

WORKDIR_ENV = "CREASON_WORKDIR"
CHECKPOINTS = "ray_train"  # Ray Train's storage: never pulled or pushed, Ray Train moves it
_PUSHED = ".creason-synced.json"  # in a working copy: (size, mtime) of each file as last synced


def is_remote(output_dir: str | Path) -> bool:
    """Whether `output_dir` is a URI of a filesystem other than the local one."""
    scheme = str(output_dir).split("://", 1)[0] if "://" in str(output_dir) else ""
    return scheme not in ("", "file")


def working_copy(uri: str) -> Path:
    """The local folder that stands for `uri`: `$CREASON_WORKDIR` (default
    `~/.cache/creason/runs`)/<hash of the URI>."""
    base = Path(os.environ.get(WORKDIR_ENV) or Path.home() / ".cache" / "creason" / "runs")
    return base / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]


def local_dir(output_dir: str | Path) -> Path:
    """Where a stage reads and writes `output_dir`'s files: the folder itself, or a URI's working copy."""
    return working_copy(str(output_dir)) if is_remote(output_dir) else Path(output_dir)


def join(output_dir: str | Path, *parts: str) -> str | Path:
    """`output_dir/parts`: a Path for a local folder, a string for a URI."""
    if is_remote(output_dir):
        return "/".join([str(output_dir).rstrip("/"), *parts])
    return Path(output_dir).joinpath(*parts)


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of `uri`."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(str(uri))
    return fs, path.rstrip("/")


def exists(location: str | Path) -> bool:
    """Whether a local path or a URI names an existing file or folder."""
    if not is_remote(location):
        return Path(location).exists()
    import pyarrow.fs as pafs

    fs, path = filesystem(str(location))
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def listing(uri: str) -> dict[str, int]:
    """{relative path: size} of every file under `uri` ({} when there is none)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {info.path[len(root) + 1:]: info.size for info in infos if info.type == pafs.FileType.File}


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def download(uri: str, dest: Path) -> Path:
    """Copy one file to `dest` through a temporary file beside it."""
    fs, path = filesystem(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    with fs.open_input_stream(path) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    os.replace(tmp, dest)
    return dest


def upload(src: Path, uri: str) -> None:
    """Copy one file to `uri` (an object store writes an object whole or not at all)."""
    fs, path = filesystem(uri)
    with open(src, "rb") as f, fs.open_output_stream(path) as out:
        shutil.copyfileobj(f, out, 1 << 22)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _synced(local: Path) -> dict:
    try:
        return json.loads((local / _PUSHED).read_text())
    except (OSError, ValueError):
        return {}


def _record(local: Path, synced: dict) -> None:
    from creason.atomic import write_text_atomic

    write_text_atomic(local / _PUSHED, json.dumps(synced))


def _skipped(rel: str, skip: tuple[str, ...]) -> bool:
    return rel == _PUSHED or any(rel == s or rel.startswith(s + "/") for s in skip)


def pull(uri: str, local: Path, skip: tuple[str, ...] = (CHECKPOINTS,), under: str = "") -> list[str]:
    """Download the files of `uri` (or of its subfolder `under`) that the working copy `local`
    lacks or holds at another size, but those under `skip`; returns their relative paths."""
    prefix = f"{under.strip('/')}/" if under else ""
    synced, fetched = _synced(local), []
    for rel, size in sorted(listing(join(uri, under) if under else uri).items()):
        rel = prefix + rel
        target = local / rel
        if _skipped(rel, skip) or (target.is_file() and target.stat().st_size == size):
            continue
        download(join(uri, rel), target)
        synced[rel] = _stamp(target)
        fetched.append(rel)
    if fetched:
        _record(local, synced)
    return fetched


def push(local: Path, uri: str, skip: tuple[str, ...] = (CHECKPOINTS,), under: str = "") -> list[str]:
    """Upload the files of the working copy `local` (or of its subfolder `under`) written since
    they were last synced (size or modification time changed), but those under `skip`; returns
    their relative paths."""
    folder = local / under if under else local
    if not folder.is_dir():
        return []
    synced, sent = _synced(local), []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        if _skipped(rel, skip) or ".tmp-" in path.name or synced.get(rel) == _stamp(path):
            continue
        upload(path, str(join(uri, rel)))
        synced[rel] = _stamp(path)
        sent.append(rel)
    if sent:
        _record(local, synced)
    return sent


def remove(output_dir: str | Path) -> None:
    """Delete a run: a local folder; for a URI, its objects and its working copy."""
    if is_remote(output_dir):
        import pyarrow.fs as pafs

        fs, path = filesystem(str(output_dir))
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
    shutil.rmtree(local_dir(output_dir), ignore_errors=True)


def pull_run(output_dir: str | Path, under: str = "") -> list[str]:
    """`pull` into the working copy of a URI `output_dir` (or its subfolder `under`); nothing for a local one."""
    return pull(str(output_dir), local_dir(output_dir), under=under) if is_remote(output_dir) else []


def push_run(output_dir: str | Path, under: str = "") -> list[str]:
    """`push` the working copy of a URI `output_dir` (or its subfolder `under`); nothing for a local one."""
    return push(local_dir(output_dir), str(output_dir), under=under) if is_remote(output_dir) else []


class synced_output:
    """`with synced_output(cfg.output_dir):` around a command: a URI's working copy is pulled
    first and pushed when the block ends, also when it fails (what was written is kept). A local
    `output_dir` needs neither."""

    def __init__(self, output_dir: str | Path, log: Callable[[str], None] | None = None):
        self.output_dir, self.log = output_dir, log

    def __enter__(self) -> Path:
        got = pull_run(self.output_dir)
        if self.log and got:
            self.log(f"{self.output_dir}: {len(got)} file(s) fetched into the working copy {local_dir(self.output_dir)}")
        return local_dir(self.output_dir)

    def __exit__(self, *exc) -> None:
        sent = push_run(self.output_dir)
        if self.log and sent:
            self.log(f"{self.output_dir}: {len(sent)} file(s) uploaded")
