"""Random ids in the shapes the providers give them (``cs_test_a1…``, ``pi_…``, ``5O190127…``).

The provider modules call these through the module (``ids.token(...)``), never by an imported
name, so that a test can replace one and make a provider answer with an id of its choosing, as a
provider that restarted and counts from the start again would (tests/test_webhook_malformed.py).
"""

from __future__ import annotations

import secrets


def token(prefix: str, n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def upper_id(n: int = 17) -> str:
    return "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(n))
