"""One botocore client class per service, not one per client.

botocore builds a new class with a method per operation every time a client is made: 20 ms for
EC2's ~830 operations, more than the calls it then makes in a hunt, which makes an EC2 and a Lambda
client per account and region (700 clients for 20 accounts × 17 regions). The class depends only on
the service's model and on the 'creating-client-class' handlers: botocore's are the same in every
session, and boto3 adds its own for S3 alone (upload_file and the rest, missing from a plain
botocore session's class), so S3 classes are made as before and any other is reused for its model.
If botocore no longer has the hook this wraps, nothing changes but the speed.
"""

from __future__ import annotations

import threading

import botocore.client

_made: dict[tuple[str, int], tuple[type, object]] = {}
_lock = threading.Lock()
# Each new botocore loader parses its own models, so a process making many plain sessions would add
# entries forever: past this many, start again (a class costs 20 ms to remake).
MAX_CLASSES = 256


def reuse_client_classes() -> None:
    creator = botocore.client.ClientCreator
    original = getattr(creator, "_create_client_class", None)
    if original is None or getattr(original, "irbot_reused", False):
        return

    def create_client_class(self, service_name, service_model, *args, **kwargs):
        description = getattr(service_model, "_service_description", None)
        if description is None or args or kwargs or service_name == "s3":
            return original(self, service_name, service_model, *args, **kwargs)
        # Keyed by the model's parsed description (one object per service, per loader); kept with it,
        # so its id can't be reused by another object while the entry exists.
        key = (service_name, id(description))
        with _lock:
            found = _made.get(key)
        if found is None:
            found = (original(self, service_name, service_model), description)
            with _lock:
                if len(_made) >= MAX_CLASSES:
                    _made.clear()
                found = _made.setdefault(key, found)
        return found[0]

    create_client_class.irbot_reused = True  # type: ignore[attr-defined]
    creator._create_client_class = create_client_class
