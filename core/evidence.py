"""The evidence store: write-once objects in S3, each carrying the SHA-256 of its body."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from actions.aws import Declaration, call, paginate
from actions.errors import ActionError, explain
from core.logs import get_logger

log = get_logger(__name__)

# A stream is written under this prefix first and becomes evidence by one copy to its own key; irbot's policy
# allows deletes under this prefix only (bot.policies), so the evidence itself stays undeletable.
STAGING = "staging/"
# How long a stage's own lock lasts: long enough for its upload, short enough that a stage left behind goes soon.
STAGE_HOLD = timedelta(days=1)


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
        """Throw away what a stream whose writer died left under ``prefix`` (keys holding ``marker``): its upload
        and its stage (under STAGING), and the upload of a large copy cut short (at the evidence key). Returns their keys."""
        thrown = []
        for where in (STAGING + prefix, prefix):
            for upload in call(self.s3, "list_multipart_uploads", Bucket=self.bucket, Prefix=where).get("Uploads", []):
                if marker in upload["Key"]:
                    call(self.s3, "abort_multipart_upload", Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    thrown.append(upload["Key"])
        for version in paginate(self.s3, "list_object_versions", "Versions", Bucket=self.bucket, Prefix=STAGING + prefix):
            if marker in version["Key"] and self.drop_stage(version["Key"], version["VersionId"]):
                thrown.append(version["Key"])
        return thrown

    def drop_stage(self, key: str, version_id: str | None) -> bool:
        """Delete a stage: the version itself (no delete marker), past its GOVERNANCE lock. False when S3 refuses:
        the stage is left to expire, and what was copied from it stays whole."""
        params = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        if self.protection().locked:
            params["BypassGovernanceRetention"] = True
        try:
            call(self.s3, "delete_object", **params)
        except ActionError as exc:
            log.warning("stage left behind", key=key, error=str(exc))
            return False
        return True

    def open_stream(self, key: str, *, name: str = "", content_type: str = "application/octet-stream", part_size: int = 64 << 20) -> "EvidenceStream":
        return EvidenceStream(self, key, name=name, content_type=content_type, part_size=part_size)


ONE_COPY_LIMIT = 5 << 30  # the largest object S3 copies in one CopyObject call

EVIDENCE_PERMISSIONS = ("s3:GetBucketObjectLockConfiguration", "s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention",
                        "s3:AbortMultipartUpload", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:ListBucket")
# Granted on STAGING only, in a statement of their own (bot.policies).
STAGE_PERMISSIONS = ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention")


class EvidenceStream:
    """A large piece of evidence written as it arrives: an S3 multipart upload, parts sent from a
    thread while the next one fills, never the whole thing on local disk or in memory.

    S3's multipart checksums are per part, so the caller hashes the whole stream, and metadata can't
    be added to an upload already started. So the upload goes to a stage of its own (under STAGING),
    and ``complete`` copies it to the evidence key with its digest and its lock in one step: the
    evidence key has one version, whole, from its first moment. Then the stage is deleted."""

    def __init__(self, store: "EvidenceStore", key: str, *, name: str = "", content_type: str = "application/octet-stream",
                 part_size: int = 64 << 20, attempts: int = 3):
        import queue
        import threading

        self.store, self.key, self.name, self.content_type = store, key, name or key.rsplit("/", 1)[-1], content_type
        self.part_size, self.attempts = max(part_size, 5 << 20), attempts
        self.protection = store.protection()
        self.stage = f"{STAGING}{key}.{secrets.token_hex(8)}"
        self.staged: dict | None = None  # the stage's completion, once its upload is done
        params = dict(Bucket=store.bucket, Key=self.stage, ContentType=content_type, ChecksumAlgorithm="SHA256")
        if self.protection.locked:
            # The deployed bucket's default retention (COMPLIANCE) would lock every new version it isn't told
            # otherwise about, the stage too, for months. Retention given with the write is the version's own and
            # the default doesn't apply to it (S3 applies the default only to versions placed without a mode and
            # date); GOVERNANCE can be deleted early by a caller with s3:BypassGovernanceRetention who asks to.
            params.update(ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=datetime.now(timezone.utc) + STAGE_HOLD)
        self.upload_id = call(store.s3, "create_multipart_upload", **params)["UploadId"]
        self.pending: list[memoryview] = []  # the part being filled, in pieces
        self.pending_size = 0
        self.parts: list[dict] = []
        self.size = 0
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # at most two parts waiting: memory stays bounded
        self._thread = threading.Thread(target=self._send_parts, name=f"upload-{self.name}", daemon=True)
        self._thread.start()

    def write(self, data: bytes | memoryview) -> None:
        """Take ``data`` (bytes, or a read-only view it may keep until the part is sent); each byte is copied once,
        into its part: growing one buffer and cutting parts off its front cost more than the hashing."""
        if self.error:
            raise ActionError(f"uploading {self.name} failed: {self.error}")
        view = memoryview(data).cast("B")
        if not isinstance(view.obj, bytes):
            view = memoryview(bytes(view))  # its owner may change it before the part is joined
        self.size += len(view)
        while len(view):
            piece = view[: self.part_size - self.pending_size]
            self.pending.append(piece)
            self.pending_size += len(piece)
            view = view[len(piece):]
            if self.pending_size == self.part_size:
                self._put(self._joined())

    def _joined(self) -> bytes:
        part = b"".join(self.pending)
        self.pending, self.pending_size = [], 0
        return part

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
                    sent = call(self.store.s3, "upload_part", Bucket=self.store.bucket, Key=self.stage, UploadId=self.upload_id,
                                PartNumber=number, Body=body, ChecksumAlgorithm="SHA256")
                    self.parts.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent.get("ChecksumSHA256")})
                    break
                except ActionError as exc:
                    if attempt == self.attempts:
                        self.error = exc
                        return

    def _finish_parts(self) -> None:
        if self.pending or self.size == 0:  # S3 wants at least one part, even for nothing
            self._put(self._joined())
        self._put(None)
        self._thread.join()
        if self.error:
            raise ActionError(f"uploading {self.name} failed: {self.error}")

    def complete(self, sha256: str) -> dict:
        """Finish the stage, copy it to the evidence key with its digest and lock, check what S3 holds there,
        and delete the stage."""
        self._finish_parts()
        s3, bucket = self.store.s3, self.store.bucket
        parts = [{k: v for k, v in p.items() if v is not None} for p in sorted(self.parts, key=lambda p: p["PartNumber"])]
        self.staged = call(s3, "complete_multipart_upload", Bucket=bucket, Key=self.stage, UploadId=self.upload_id,
                           MultipartUpload={"Parts": parts})
        source = {"Bucket": bucket, "Key": self.stage}
        if self.staged.get("VersionId"):
            source["VersionId"] = self.staged["VersionId"]
        extra = {"Metadata": {"sha256": sha256}, "MetadataDirective": "REPLACE", "ContentType": self.content_type, "ChecksumAlgorithm": "SHA256"}
        if self.protection.locked:
            extra.update(ObjectLockMode=self.protection.mode, ObjectLockRetainUntilDate=self.protection.retain_until)
        try:
            copied: dict = {}
            if self.size <= ONE_COPY_LIMIT:
                # One CopyObject: the evidence key appears whole, with its digest and lock, or not at all.
                copied = s3.copy_object(CopySource=source, Bucket=bucket, Key=self.key, **extra)
            else:
                # Larger objects are copied in parts (server-side), of the upload's part size (boto3's own 8 MiB would
                # be thousands of calls for a disk image); the CreateMultipartUpload carries the same metadata and lock
                # (s3transfer leaves out only the copy-source conditions and the directives).
                s3.copy(source, bucket, self.key, ExtraArgs=extra,
                        Config=TransferConfig(multipart_threshold=ONE_COPY_LIMIT, multipart_chunksize=self.part_size))
        except (ClientError, BotoCoreError) as exc:
            raise ActionError(explain(exc, service="s3", region=s3.meta.region_name)) from exc
        # The version this copy made (a later writer can't stand in for it); S3 shows its lock only to a caller with
        # s3:GetObjectRetention, which the evidence store holds for this check.
        version = {"VersionId": copied["VersionId"]} if copied.get("VersionId") else {}
        try:
            head = call(s3, "head_object", Bucket=bucket, Key=self.key, **version)
        except ActionError as exc:
            raise ActionError(f"{self.name} was copied to s3://{bucket}/{self.key} but could not be checked there ({exc}); "
                              "it may stand, locked: check its sha256 metadata against the custody record") from exc
        held = (head["ContentLength"], head.get("Metadata", {}).get("sha256"), head.get("ObjectLockMode"))
        if held != (self.size, sha256, self.protection.mode):
            raise ActionError(f"{self.name}: s3://{bucket}/{self.key} holds {held[0]} bytes with digest {held[1]} and lock {held[2]}, "
                              "not what was sent: don't use it as evidence")
        self.store.drop_stage(self.stage, self.staged.get("VersionId"))
        return {"uri": f"s3://{bucket}/{self.key}", "key": self.key, "version_id": head.get("VersionId"),
                "size": self.size, "sha256": sha256, "url": self.store.link(self.key, head.get("VersionId"))}

    def abort(self) -> None:
        """Throw the upload or the stage away: a failed capture leaves nothing that looks like evidence."""
        if self.error is None:
            self.error = ActionError("aborted")
        try:
            while not self._queue.empty():
                self._queue.get_nowait()
        except Exception:  # noqa: BLE001 - emptying a queue another thread reads
            pass
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self.staged is not None:
            self.store.drop_stage(self.stage, self.staged.get("VersionId"))
            return
        try:
            self.store.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.stage, UploadId=self.upload_id)
        except (ClientError, BotoCoreError):
            pass

# The evidence store's own declaration: what it may call in the evidence bucket (see actions.aws).
EVIDENCE = Declaration("the evidence store", frozenset(EVIDENCE_PERMISSIONS + STAGE_PERMISSIONS))
