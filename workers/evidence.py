"""The evidence store: write-once objects in S3, each carrying the SHA-256 of its body."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from botocore.exceptions import BotoCoreError, ClientError

from actions.aws import call
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
    def __init__(self, s3, bucket: str, *, lock_mode: str = "COMPLIANCE", retention_days: int = 90, link_expiry_seconds: int = 43200):
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

    def link(self, key: str, version_id: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        return self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=self.link_expiry_seconds)

    def _bucket_has_object_lock(self) -> bool:
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                return False
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise ActionError(
                    f"The evidence bucket {self.bucket} does not exist (IR_EVIDENCE_BUCKET); create it, with Object Lock, and run the command again."
                ) from exc
            raise ActionError(explain(exc, service="s3", region=self.s3.meta.region_name)) from exc
        except BotoCoreError as exc:
            raise ActionError(explain(exc, service="s3", region=self.s3.meta.region_name)) from exc
        return config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


EVIDENCE_PERMISSIONS = ("s3:GetBucketObjectLockConfiguration", "s3:PutObject", "s3:PutObjectRetention", "s3:GetObject", "s3:GetObjectVersion")
