"""Leaked-key reports, in the style of GitHub's secret-scanning partner programme.

A scanner POSTs a JSON array of candidates (``[{"token": "tp-sk-…", "type": …, "url": …,
"source": …}]``). The request is verified first, on the raw body: either GitHub's way (an
ECDSA P-256 / SHA-256 signature in ``Github-Public-Key-Signature`` by the public key named in
``Github-Public-Key-Identifier``, keys configured by the operator) or with a shared secret
(``X-Signature: sha256=<HMAC-SHA256 of the body>``). Each candidate's checksum is checked
without a lookup; a match is revoked at once and its owner emailed. The answer labels every
candidate ``true_positive`` or ``false_positive``, as GitHub expects.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema

from accounts.language import in_language_of
from accounts.organizations import contacts
from core import keyformat

from .models import ApiKey
from .services import digest, revoke_key

log = logging.getLogger(__name__)

MAX_CANDIDATES = 1000
MAX_HEADER_CHARS = 2048


def _header(request: HttpRequest, name: str) -> str:
    """A signature header as printable ASCII, or "" (no signature). WSGI hands other bytes
    over as latin-1 characters, and ``compare_digest`` raises on non-ASCII text."""
    value = request.headers.get(name, "")
    if len(value) > MAX_HEADER_CHARS or not (value.isascii() and value.isprintable()):
        return ""
    return value.strip()


def _verified(request: HttpRequest) -> bool:
    body = request.body
    secret: str = settings.TP_SECRET_SCANNING_HMAC_SECRET
    signature = _header(request, "X-Signature")
    if secret and signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature.removeprefix("sha256="))
    keys: dict[str, str] = settings.TP_SECRET_SCANNING_PUBLIC_KEYS
    key_id = _header(request, "Github-Public-Key-Identifier")
    github_signature = _header(request, "Github-Public-Key-Signature")
    if key_id in keys and github_signature:
        try:
            public_key = serialization.load_pem_public_key(keys[key_id].encode())
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                return False
            signature_bytes = base64.b64decode(github_signature, validate=True)
            public_key.verify(signature_bytes, body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # binascii.Error is a ValueError
            return False
        return True
    return False


def _notify(key: ApiKey, url: str) -> None:
    """The key's maker hears of it, and the account's owner (an organization's) too."""
    context = {"key": key, "url": url[:500]}
    users = {u.pk: u for u in [key.created_by, *contacts(key.account)[:1]] if u is not None}
    for user in users.values():
        with in_language_of(user):
            send_mail(
                subject=render_to_string("keys/email/leaked_subject.txt", context).strip(),
                message=render_to_string("keys/email/leaked_body.txt", context),
                from_email=None,
                recipient_list=[user.email],
            )


@extend_schema(exclude=True)
@csrf_exempt
@require_POST
def report(request: HttpRequest) -> HttpResponse:
    if not (settings.TP_SECRET_SCANNING_HMAC_SECRET or settings.TP_SECRET_SCANNING_PUBLIC_KEYS):
        raise Http404  # not configured: not offered
    if not _verified(request):
        return JsonResponse({"error": "invalid signature"}, status=401)
    try:
        candidates = json.loads(request.body)
    except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
        return JsonResponse({"error": "invalid JSON"}, status=400)
    if not isinstance(candidates, list) or len(candidates) > MAX_CANDIDATES:
        return JsonResponse({"error": f"expected an array of at most {MAX_CANDIDATES}"}, status=400)
    answers: list[dict[str, Any]] = []
    for candidate in candidates:
        if not isinstance(candidate, dict) or not isinstance(candidate.get("token"), str):
            continue
        token: str = candidate["token"]
        label = "false_positive"
        if keyformat.is_well_formed(token):
            key = (
                ApiKey.objects.select_related("account", "created_by")
                .filter(digest=digest(token))
                .first()
            )
            if key is not None:
                label = "true_positive"
                if key.is_active:
                    revoke_key(key=key, reason="leaked")
                    url = str(candidate.get("url") or "")
                    transaction.on_commit(functools.partial(_notify, key, url))
                    log.warning("revoked leaked key %s (account %s)", key.masked, key.account_id)
        answers.append(
            {
                "token_raw": token,
                "token_type": str(candidate.get("type") or "tokenpapa_api_key")[:100],
                "label": label,
            }
        )
    return JsonResponse(answers, safe=False)
