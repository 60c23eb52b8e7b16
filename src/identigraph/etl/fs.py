"""Paths as URIs: one small filesystem interface over local disk, Hadoop's FileSystem API and S3.

The Spark jobs run on a driver that may sit on a cluster node reading ``s3://`` (EMRFS), ``s3a://`` or
``hdfs://``: every file they touch outside Spark's own readers and writers (table discovery, CSV headers,
manifests, the ``LATEST`` pointer, labels) goes through ``HadoopFS``, so the cluster's own credentials,
endpoints and committers apply. Local paths use the local disk directly (no ``.crc`` side files, and
``os.replace`` gives the atomic pointer swap). Programs without a JVM — the model's snapshot reader —
use ``PyFS``: the local disk or S3 through boto3 (which reads the same ``AWS_*`` environment).

URIs are plain strings; ``join`` appends with ``/``. A path without a scheme (or ``file:``) is local.
"""

from __future__ import annotations

import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from identigraph.errors import SchemaError


@dataclass(frozen=True)
class Entry:
    """One listing entry, the same shape for every filesystem so callers never branch on the scheme."""
    uri: str
    size: int
    is_dir: bool

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def scheme(uri: str | Path) -> str:
    """The URI's scheme in lower case; '' for a bare path (a Windows drive letter is not a scheme)."""
    text = str(uri)
    parsed = urlparse(text)
    # a Windows drive letter or a bare path has no real scheme
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def is_local(uri: str | Path) -> bool:
    """Local paths skip Hadoop and boto3: the local disk gives atomic renames and no ``.crc`` files."""
    return scheme(uri) in ("", "file")


def local_path(uri: str | Path) -> Path:
    """A local URI (``file:`` or bare) as a ``Path``."""
    text = str(uri)
    return Path(urlparse(text).path) if scheme(text) == "file" else Path(text)


def normalise(uri: str | Path) -> str:
    """A local path made absolute; a URI kept as it is (without a trailing slash)."""
    if is_local(uri):
        return str(local_path(uri).expanduser().resolve())
    return str(uri).rstrip("/")


def join(base: str, *parts: str) -> str:
    """URIs join with ``/`` on every filesystem (``os.path.join`` would break ``s3://``)."""
    out = str(base).rstrip("/")
    for p in parts:
        out += "/" + str(p).strip("/")
    return out


def parent(uri: str) -> str:
    """The URI one level up, as ``join`` would have built it."""
    return str(uri).rstrip("/").rsplit("/", 1)[0]


def relative(base: str, uri: str) -> str:
    """``uri`` relative to ``base``, as manifests record files (so a moved snapshot still resolves)."""
    base, uri = str(base).rstrip("/") + "/", str(uri)
    if not uri.startswith(base):
        raise ValueError(f"{uri} is not under {base}")
    return uri[len(base):]


class FS(Protocol):
    """The few operations the jobs need outside Spark's readers, so local disk, Hadoop and S3 are interchangeable."""
    def exists(self, uri: str) -> bool: ...
    def is_dir(self, uri: str) -> bool: ...
    def list(self, uri: str, recursive: bool = False) -> list[Entry]: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def head(self, uri: str, n: int) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def delete(self, uri: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...


def read_text(fs: FS, uri: str) -> str:
    """Manifests, pointers and summaries are UTF-8 JSON on every filesystem."""
    return fs.read_bytes(uri).decode("utf-8")


def first_line(fs: FS, uri: str) -> str:
    """The header line of a CSV (gzip or plain), reading only its first 64 KiB."""
    data = fs.head(uri, 1 << 16)
    if uri.endswith(".gz"):
        data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)  # a truncated stream is fine here
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[0] if text else ""


class LocalFS:
    """The local disk. Writes of small files are atomic (temp file + ``os.replace``)."""

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def is_dir(self, uri: str) -> bool:
        return local_path(uri).is_dir()

    def list(self, uri: str, recursive: bool = False) -> list[Entry]:
        root = local_path(uri)
        if not root.is_dir():
            return []
        it = root.rglob("*") if recursive else root.iterdir()
        return sorted((Entry(str(p), p.stat().st_size if p.is_file() else 0, p.is_dir()) for p in it),
                      key=lambda e: e.uri)

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def head(self, uri: str, n: int) -> bytes:
        with open(local_path(uri), "rb") as fh:
            return fh.read(n)

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def delete(self, uri: str) -> None:
        import shutil

        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()

    def rename(self, src: str, dst: str) -> None:
        local_path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local_path(src), local_path(dst))


class HadoopFS:
    """Hadoop's FileSystem API through the Spark driver's JVM: the cluster's schemes, credentials and
    endpoints (``s3://`` on EMR, ``s3a://``, ``hdfs://``). Local URIs go to ``LocalFS``."""

    def __init__(self, spark: Any) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self._local = LocalFS()

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._conf), path

    def exists(self, uri: str) -> bool:
        if is_local(uri):
            return self._local.exists(uri)
        fs, path = self._fs(uri)
        return bool(fs.exists(path))

    def is_dir(self, uri: str) -> bool:
        if is_local(uri):
            return self._local.is_dir(uri)
        fs, path = self._fs(uri)
        try:
            return bool(fs.getFileStatus(path).isDirectory())
        except Exception:  # FileNotFoundException arrives as a Py4J error
            return False

    def list(self, uri: str, recursive: bool = False) -> list[Entry]:
        if is_local(uri):
            return self._local.list(uri, recursive)
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        out = []
        if recursive:
            it = fs.listFiles(path, True)
            while it.hasNext():
                st = it.next()
                out.append(Entry(st.getPath().toString(), int(st.getLen()), False))
        else:
            for st in fs.listStatus(path):
                out.append(Entry(st.getPath().toString(), int(st.getLen()), bool(st.isDirectory())))
        return sorted(out, key=lambda e: e.uri)

    def read_bytes(self, uri: str) -> bytes:
        if is_local(uri):
            return self._local.read_bytes(uri)
        fs, path = self._fs(uri)
        stream = fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def head(self, uri: str, n: int) -> bytes:
        if is_local(uri):
            return self._local.head(uri, n)
        fs, path = self._fs(uri)
        stream = fs.open(path)
        try:
            buf = self._jvm.java.io.ByteArrayOutputStream()
            self._jvm.org.apache.commons.io.IOUtils.copyLarge(stream, buf, 0, n)
            return bytes(buf.toByteArray())
        finally:
            stream.close()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Local: temp file + rename. Object stores: one PUT on close, which S3 makes visible whole."""
        if is_local(uri):
            return self._local.write_bytes(uri, data)
        fs, path = self._fs(uri)
        out = fs.create(path, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def delete(self, uri: str) -> None:
        if is_local(uri):
            return self._local.delete(uri)
        fs, path = self._fs(uri)
        fs.delete(path, True)

    def rename(self, src: str, dst: str) -> None:
        if is_local(src):
            return self._local.rename(src, dst)
        fs, path = self._fs(src)
        if fs.exists(self._jvm.org.apache.hadoop.fs.Path(dst)):
            fs.delete(self._jvm.org.apache.hadoop.fs.Path(dst), True)
        if not fs.rename(path, self._jvm.org.apache.hadoop.fs.Path(dst)):
            raise SchemaError(f"rename {src} → {dst} failed")


def _s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class PyFS:
    """Local disk or S3 (``s3://``, ``s3a://``, ``s3n://``) through boto3, for readers without a JVM.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` like any boto3 client."""

    def __init__(self, s3: Any = None) -> None:
        self._s3 = s3
        self._local = LocalFS()

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def _check(self, uri: str) -> None:
        if not is_local(uri) and scheme(uri) not in ("s3", "s3a", "s3n"):
            raise SchemaError(f"{uri}: only local paths and s3:// URIs can be read here")

    def exists(self, uri: str) -> bool:
        self._check(uri)
        if is_local(uri):
            return self._local.exists(uri)
        bucket, key = _s3_location(uri)
        resp = self._client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return resp.get("KeyCount", 0) > 0

    def is_dir(self, uri: str) -> bool:
        if is_local(uri):
            return self._local.is_dir(uri)
        return self.exists(uri.rstrip("/") + "/")

    def list(self, uri: str, recursive: bool = False) -> list[Entry]:
        self._check(uri)
        if is_local(uri):
            return self._local.list(uri, recursive)
        bucket, key = _s3_location(uri.rstrip("/") + "/")
        base = f"{scheme(uri)}://{bucket}/"
        out = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        if not recursive:
            kwargs["Delimiter"] = "/"
        for page in self._client().get_paginator("list_objects_v2").paginate(**kwargs):
            out += [Entry(base + o["Key"], int(o["Size"]), False) for o in page.get("Contents", [])
                    if not o["Key"].endswith("/")]
            out += [Entry(base + p["Prefix"].rstrip("/"), 0, True) for p in page.get("CommonPrefixes", [])]
        return sorted(out, key=lambda e: e.uri)

    def read_bytes(self, uri: str) -> bytes:
        self._check(uri)
        if is_local(uri):
            return self._local.read_bytes(uri)
        bucket, key = _s3_location(uri)
        return self._client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def head(self, uri: str, n: int) -> bytes:
        if is_local(uri):
            return self._local.head(uri, n)
        bucket, key = _s3_location(uri)
        return self._client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{n - 1}")["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        self._check(uri)
        if is_local(uri):
            return self._local.write_bytes(uri, data)
        bucket, key = _s3_location(uri)
        self._client().put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, uri: str) -> None:
        if is_local(uri):
            return self._local.delete(uri)
        bucket, _ = _s3_location(uri)
        for e in self.list(uri, recursive=True):
            self._client().delete_object(Bucket=bucket, Key=_s3_location(e.uri)[1])

    def rename(self, src: str, dst: str) -> None:
        if is_local(src):
            return self._local.rename(src, dst)
        bucket, key = _s3_location(src)
        dbucket, dkey = _s3_location(dst)
        self._client().copy_object(Bucket=dbucket, Key=dkey, CopySource={"Bucket": bucket, "Key": key})
        self._client().delete_object(Bucket=bucket, Key=key)
