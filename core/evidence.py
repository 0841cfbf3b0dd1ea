"""The evidence store: write-once objects in S3, each carrying the SHA-256 of its body."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from botocore.exceptions import BotoCoreError, ClientError

from actions.aws import Declaration, call, paginate
from actions.errors import ActionError, explain


@dataclass(frozen=True)
class Protection:
    """Whether objects written now can't be changed or deleted, and until when."""

    locked: bool
    mode: str | None = None
    retain_until: datetime | None = None

    def describe(self, bucket: str) -> str:
        if self.locked:
            return f"write-protected by S3 Object Lock ({self.mode} until {self.retain_until:%Y-%m-%d})"
        return (
            f"NOT write-protected: bucket {bucket} has no Object Lock, so anyone with access "
            f"to it can change or delete this evidence"
        )


@dataclass(frozen=True)
class StoredObject:
    name: str
    bucket: str
    key: str
    size: int
    sha256: str
    version_id: str | None
    url: str
    description: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class EvidenceStore:
    def __init__(self, s3, bucket: str, *, lock_mode: str = "COMPLIANCE", retention_days: int = 90, link_expiry_seconds: int = 3600):
        self.s3 = s3
        self.bucket = bucket
        self.lock_mode = lock_mode
        self.retention_days = retention_days
        self.link_expiry_seconds = link_expiry_seconds
        self._lock_enabled: bool | None = None

    def protection(self) -> Protection:
        if self._lock_enabled is None:
            self._lock_enabled = self._bucket_has_object_lock()
        if not self._lock_enabled:
            return Protection(False)
        until = datetime.now(timezone.utc) + timedelta(days=self.retention_days)
        return Protection(True, self.lock_mode, until)

    def put(self, key: str, body: bytes, *, name: str = "", content_type: str = "application/octet-stream", description: str = "") -> StoredObject:
        digest = hashlib.sha256(body).digest()
        params = dict(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata={"sha256": digest.hex()},
            # S3 checks the body against this on arrival, so a corrupted upload is refused
            # (and Object Lock requires an integrity header on every write).
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(digest).decode(),
        )
        protection = self.protection()
        if protection.locked:
            params.update(ObjectLockMode=protection.mode, ObjectLockRetainUntilDate=protection.retain_until)
        response = call(self.s3, "put_object", **params)
        return StoredObject(
            name=name or key.rsplit("/", 1)[-1],
            bucket=self.bucket,
            key=key,
            size=len(body),
            sha256=digest.hex(),
            version_id=response.get("VersionId"),
            url=self.link(key, response.get("VersionId")),
            description=description,
        )

    def newest(self, prefix: str) -> bytes | None:
        """The body of the object under ``prefix`` whose key sorts last (keys that start with a UTC time), or None."""
        keys = [o["Key"] for o in paginate(self.s3, "list_objects_v2", "Contents", Bucket=self.bucket, Prefix=prefix)]
        if not keys:
            return None
        return call(self.s3, "get_object", Bucket=self.bucket, Key=max(keys))["Body"].read()

    def link(self, key: str, version_id: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        return self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=self.link_expiry_seconds)

    def _bucket_has_object_lock(self) -> bool:
        return self.lock_configuration().get("ObjectLockEnabled") == "Enabled"

    def lock_configuration(self) -> dict:
        """The bucket's ObjectLockConfiguration (``ObjectLockEnabled``, and ``Rule`` when it has a default retention),
        ``{}`` without Object Lock; a missing bucket or a refusal is an ActionError. ``irbot doctor`` reads it too."""
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                return {}
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise ActionError(
                    f"The evidence bucket {self.bucket} does not exist (IR_EVIDENCE_BUCKET); create it, with Object Lock, and run the command again."
                ) from exc
            raise ActionError(explain(exc, service="s3", region=self.s3.meta.region_name)) from exc
        except BotoCoreError as exc:
            raise ActionError(explain(exc, service="s3", region=self.s3.meta.region_name)) from exc
        return config.get("ObjectLockConfiguration", {})

    def abort_unfinished(self, prefix: str, marker: str) -> list[str]:
        """Throw away the multipart uploads under ``prefix`` whose key holds ``marker``: a stream whose
        writer died. Returns their keys."""
        uploads = call(self.s3, "list_multipart_uploads", Bucket=self.bucket, Prefix=prefix).get("Uploads", [])
        aborted = []
        for upload in uploads:
            if marker in upload["Key"]:
                call(self.s3, "abort_multipart_upload", Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(upload["Key"])
        return aborted

    def open_stream(self, key: str, *, name: str = "", content_type: str = "application/octet-stream", part_size: int = 64 << 20) -> "EvidenceStream":
        return EvidenceStream(self, key, name=name, content_type=content_type, part_size=part_size)


EVIDENCE_PERMISSIONS = ("s3:GetBucketObjectLockConfiguration", "s3:PutObject", "s3:PutObjectRetention", "s3:GetObject", "s3:GetObjectVersion",
                        "s3:AbortMultipartUpload", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:ListBucket")


class EvidenceStream:
    """A large piece of evidence written as it arrives: an S3 multipart upload, parts sent from a
    thread while the next one fills, never the whole thing on local disk or in memory.

    S3's multipart checksums are per part, so the caller hashes the whole stream and ``complete``
    stores that digest as the object's sha256 metadata."""

    def __init__(self, store: "EvidenceStore", key: str, *, name: str = "", content_type: str = "application/octet-stream",
                 part_size: int = 64 << 20, attempts: int = 3):
        import queue
        import threading

        self.store, self.key, self.name, self.content_type = store, key, name or key.rsplit("/", 1)[-1], content_type
        self.part_size, self.attempts = max(part_size, 5 << 20), attempts
        self.protection = store.protection()
        params = dict(Bucket=store.bucket, Key=key, ContentType=content_type, ChecksumAlgorithm="SHA256")
        if self.protection.locked:
            params.update(ObjectLockMode=self.protection.mode, ObjectLockRetainUntilDate=self.protection.retain_until)
        self.upload_id = call(store.s3, "create_multipart_upload", **params)["UploadId"]
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.size = 0
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # at most two parts waiting: memory stays bounded
        self._thread = threading.Thread(target=self._send_parts, name=f"upload-{self.name}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        if self.error:
            raise ActionError(f"uploading {self.name} failed: {self.error}")
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= self.part_size:
            self._put(bytes(self.buffer[: self.part_size]))
            del self.buffer[: self.part_size]

    def _put(self, part: bytes | None) -> None:
        """Queue a part, waiting for room; an upload thread that gave up is an error, not a hang."""
        import queue

        while True:
            if self.error or not self._thread.is_alive():
                raise ActionError(f"uploading {self.name} failed: {self.error or 'the upload thread stopped'}")
            try:
                self._queue.put(part, timeout=1)
                return
            except queue.Full:
                continue

    def _send_parts(self) -> None:
        number = 0
        while True:
            body = self._queue.get()
            if body is None or self.error:
                return
            number += 1
            for attempt in range(1, self.attempts + 1):
                try:
                    sent = call(self.store.s3, "upload_part", Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                PartNumber=number, Body=body, ChecksumAlgorithm="SHA256")
                    self.parts.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent.get("ChecksumSHA256")})
                    break
                except ActionError as exc:
                    if attempt == self.attempts:
                        self.error = exc
                        return

    def _finish_parts(self) -> None:
        if self.buffer or self.size == 0:  # S3 wants at least one part, even for nothing
            self._put(bytes(self.buffer))
            self.buffer.clear()
        self._put(None)
        self._thread.join()
        if self.error:
            raise ActionError(f"uploading {self.name} failed: {self.error}")

    def complete(self, sha256: str) -> dict:
        """Finish the upload, then record the whole-object digest as the object's sha256 metadata."""
        self._finish_parts()
        parts = [{k: v for k, v in p.items() if v is not None} for p in sorted(self.parts, key=lambda p: p["PartNumber"])]
        call(self.store.s3, "complete_multipart_upload", Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
             MultipartUpload={"Parts": parts})
        # Metadata can't be added to an upload already started, so the object is copied onto itself
        # with it (S3 copies server-side; a large object is copied in parts).
        extra = {"Metadata": {"sha256": sha256}, "MetadataDirective": "REPLACE", "ContentType": self.content_type, "ChecksumAlgorithm": "SHA256"}
        try:
            self.store.s3.copy({"Bucket": self.store.bucket, "Key": self.key}, self.store.bucket, self.key, ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise ActionError(explain(exc, service="s3", region=self.store.s3.meta.region_name)) from exc
        head = call(self.store.s3, "head_object", Bucket=self.store.bucket, Key=self.key)
        if self.protection.locked and head.get("ObjectLockMode") != self.protection.mode:
            # The copy is a new version: lock it (retention is set on the version, after the copy).
            call(self.store.s3, "put_object_retention", Bucket=self.store.bucket, Key=self.key, VersionId=head["VersionId"],
                 Retention={"Mode": self.protection.mode, "RetainUntilDate": self.protection.retain_until})
        if head.get("Metadata", {}).get("sha256") != sha256 or head["ContentLength"] != self.size:
            raise ActionError(f"{self.name}: S3 holds {head['ContentLength']} bytes with digest {head.get('Metadata', {}).get('sha256')}, not what was sent")
        return {"uri": f"s3://{self.store.bucket}/{self.key}", "key": self.key, "version_id": head.get("VersionId"),
                "size": self.size, "sha256": sha256, "url": self.store.link(self.key, head.get("VersionId"))}

    def abort(self) -> None:
        """Throw the partial upload away: a failed capture leaves nothing that looks like evidence."""
        if self.error is None:
            self.error = ActionError("aborted")
        try:
            while not self._queue.empty():
                self._queue.get_nowait()
        except Exception:  # noqa: BLE001 - emptying a queue another thread reads
            pass
        self._queue.put(None)
        self._thread.join(timeout=60)
        try:
            self.store.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except (ClientError, BotoCoreError):
            pass

# The evidence store's own declaration: what it may call in the evidence bucket (see actions.aws).
EVIDENCE = Declaration("the evidence store", frozenset(EVIDENCE_PERMISSIONS))
