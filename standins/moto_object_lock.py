"""moto's S3, told what AWS does with Object Lock where irbot's evidence store relies on it.

- A completed multipart upload's object takes the retention its CreateMultipartUpload asked for, or else the
  bucket's default: moto's carry none at all, so a streamed image (and a large copy, done in parts) was never locked.
- A copy isn't asked for Content-MD5 or a checksum header: it sends no body, and AWS's CopyObject has no such
  member to send (botocore's model); moto refuses a copy that sets a retention, or lands in a bucket with a
  default one, without it.

On in the tests' moto server (standins/moto_process.py) and in `irbot demo`, which runs on moto too.
"""

from __future__ import annotations

import contextlib
import re

from moto.s3 import models, responses
from werkzeug.datastructures import Headers


@contextlib.contextmanager
def locking_like_aws():
    post, put, complete = responses.S3Response._key_response_post, responses.S3Response._key_response_put, models.S3Backend.complete_multipart_upload

    def key_response_post(self, request, body, bucket_name, query, key_name):
        answer = post(self, request, body, bucket_name, query, key_name)
        started = re.search(r"<UploadId>([^<]+)</UploadId>", str(answer[2])) if "uploads" in query else None
        if started:
            upload = self.backend.get_bucket(bucket_name).multiparts[started.group(1)]
            upload.irbot_lock = (request.headers.get("x-amz-object-lock-mode"), request.headers.get("x-amz-object-lock-retain-until-date"))
        return answer

    def complete_multipart_upload(self, bucket_name, multipart_id, body):
        bucket = self.get_bucket(bucket_name)
        mode, until = getattr(bucket.multiparts.get(multipart_id), "irbot_lock", (None, None))
        key = complete(self, bucket_name, multipart_id, body)
        if key is not None and not mode and bucket.has_default_lock:
            mode, until = bucket.default_lock_mode, bucket.default_retention()
        if key is not None and mode:
            key.lock_mode, key.lock_until = mode, until
        return key

    def key_response_put(self, query, key_name):
        if "x-amz-copy-source" in self.headers and not query.get("uploadId"):
            self.headers = Headers(self.headers)
            self.headers.setdefault("x-amz-sdk-checksum-algorithm", "SHA256")  # moto's check passes; nothing reads it
        return put(self, query, key_name)

    responses.S3Response._key_response_post = key_response_post
    responses.S3Response._key_response_put = key_response_put
    models.S3Backend.complete_multipart_upload = complete_multipart_upload
    try:
        yield
    finally:
        responses.S3Response._key_response_post, responses.S3Response._key_response_put = post, put
        models.S3Backend.complete_multipart_upload = complete
