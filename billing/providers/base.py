"""The one base class of payment providers (card, PayPal, crypto).

A provider turns a :class:`~billing.models.Payment` into a page at the provider where the
customer pays, reads back where that payment stands, and reads the provider's webhooks. It
never credits or debits anything itself: every change of money goes through the services in
:mod:`billing.payments` (``confirm``, ``reverse``, ...), which lock the payment row and apply
each change once.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Literal, TypeVar, overload
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .. import payments
from ..models import Payment

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
#: Larger than any payment, small enough for the ledger's columns (20 digits, 9 decimals).
MAX_CENTS = 10**12
#: The longest provider id the payment and event columns hold.
MAX_ID_LENGTH = 200
#: Provider events nest a handful of levels; far more is an attack on the stack.
MAX_JSON_DEPTH = 64
#: A decimal figure that fits the ledger's columns (BTCPay may send more than two decimals).
_AMOUNT = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,9})?")

Handler = Callable[[dict[str, Any]], None]
T = TypeVar("T")


class ProviderError(Exception):
    """The provider could not be reached or refused a call. ``retry`` says whether asking
    again later may help (network trouble, 5xx, 429)."""

    def __init__(self, message: str, *, retry: bool = True, code: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.code = code


class Malformed(ProviderError):
    """A provider's object (a verified event, or an answer of its API) lacks a field we need
    or has one of the wrong type. Asking again brings the same bytes, so it is never retried:
    a webhook carrying it is kept as ``failed`` with the reason (an operator can replay it
    once the code reads that shape) and answered 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False, code="malformed")


class DuplicateReference(ProviderError):
    """The provider answered with an id we already hold for another payment (a stand-in that
    restarted and counts from the start again, a replayed answer). Trusting it would tie two
    payments to one provider object, so the new payment goes no further."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False, code="duplicate_reference")


class InvalidWebhook(Exception):
    """A webhook that did not prove it came from the provider: answered 400, stored nowhere,
    and nothing else happens (no outbound call beyond the provider's own verification)."""


class Ignore(Exception):
    """A verified event that needs no action (e.g. about a payment that is not ours). Stored
    with status ``ignored`` and answered 2xx, so the provider stops sending it."""


def cents(amount: Decimal) -> int:
    """USD amount to integer cents; refuses fractions of a cent rather than rounding."""
    value = amount * 100
    if value != value.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of cents")
    return int(value)


def from_cents(value: Any, *, signed: bool = False) -> Decimal:
    """A provider's integer amount in cents as USD. Anything else (a string, a float, a bool,
    an absurd figure, a negative one unless ``signed``) is :class:`Malformed`: ``int()``
    would quietly truncate 10.99 to 10, and a negative refund would credit."""
    if type(value) is not int or abs(value) > MAX_CENTS or (value < 0 and not signed):
        raise Malformed(f"an amount in cents that is not a sane integer: {value!r:.40}")
    return (Decimal(value) / 100).quantize(CENT)


def decimal_amount(value: Any) -> Decimal:
    """A provider's decimal amount given as a string ("10.59"). ``Decimal()`` alone would
    also take "NaN", "1e9999", " 1_0 " and non-ASCII digits."""
    if not (isinstance(value, str) and _AMOUNT.fullmatch(value)):
        raise Malformed(f"an amount that is not a decimal figure: {value!r:.40}")
    return Decimal(value)


@overload
def field(obj: Any, key: str, kind: type[T], *, required: Literal[True]) -> T: ...
@overload
def field(obj: Any, key: str, kind: type[T], *, required: bool = False) -> T | None: ...
def field(obj: Any, key: str, kind: type[T], *, required: bool = False) -> T | None:
    """``obj[key]`` of a provider's object, of the type the code after it relies on. Absent
    or null is None (or :class:`Malformed` when ``required``); another type is Malformed.
    A verified event is still only data: nothing after this may assume its shape."""
    if not isinstance(obj, dict):
        raise Malformed(f"expected an object holding {key!r}, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None:
        if required:
            raise Malformed(f"{key!r} is missing")
        return None
    # bool is an int to isinstance; no provider means True by an amount.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Malformed(f"{key!r} is a {type(value).__name__}, expected {kind.__name__}")
    return value


@overload
def ident(obj: Any, key: str, *, required: Literal[True]) -> str: ...
@overload
def ident(obj: Any, key: str, *, required: bool = False) -> str | None: ...
def ident(obj: Any, key: str, *, required: bool = False) -> str | None:
    """A provider's id: a non-empty string that fits the columns that store it."""
    value = field(obj, key, str, required=required)
    if value is not None and not 0 < len(value) <= MAX_ID_LENGTH:
        raise Malformed(f"{key!r} is not an id")
    return value or None


def objects(obj: Any, key: str) -> list[dict[str, Any]]:
    """A list of objects (``purchase_units``, ``links``...); absent is empty."""
    items = field(obj, key, list) or []
    if not all(isinstance(item, dict) for item in items):
        raise Malformed(f"{key!r} holds something other than objects")
    return items


def header(request: HttpRequest, name: str, *, max_length: int = 2048) -> str:
    """A request header as printable ASCII, or :class:`InvalidWebhook`. Every provider's
    signature headers are ASCII; WSGI hands any other byte over as a latin-1 character,
    which must not reach a comparison (``compare_digest`` raises on non-ASCII text) or a
    parser."""
    value = request.headers.get(name, "")
    if len(value) > max_length or not (value.isascii() and value.isprintable()):
        raise InvalidWebhook(f"malformed {name} header")
    return value.strip()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999 parses to infinity
        raise ValueError("a number out of range")
    return value


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json(raw: bytes) -> Any:
    """A webhook body as JSON, or :class:`InvalidWebhook`: not UTF-8, not JSON, NaN or
    Infinity (not JSON, and PostgreSQL's jsonb refuses them), nested deeper than the parser
    can go, or holding text PostgreSQL cannot store (a NUL, or a lone surrogate escaped as
    ``\\ud800``). What this returns can be stored as it is."""
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError):
        raise InvalidWebhook("the body is not JSON") from None
    # Depth is capped well below the interpreter's limit: storing the event serialises it
    # again, deeper in the stack than where it was parsed.
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidWebhook("the body is nested too deep")
        if isinstance(item, dict):
            pending.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            pending.extend((part, depth + 1) for part in item)
        elif isinstance(item, str) and not _storable(item):
            raise InvalidWebhook("the body holds text that cannot be stored")
    return data


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PaymentProvider:
    """One payment provider. Subclasses set ``identifier`` (also the ``Payment.provider``
    value and the webhook path), ``verbose_name`` and ``handlers``, and implement the hooks.

    Rules every hook keeps:

    * Nothing here moves money. Credits and debits happen only through ``billing.payments``.
    * Amounts that reach the ledger come from the provider's own objects (a signed event, or
      an object fetched from its API), never from a redirect, a query string or a form.
    * Outbound calls have explicit timeouts and raise :class:`ProviderError`.
    """

    identifier: ClassVar[str] = ""
    verbose_name: ClassVar[Any] = ""
    #: A short note shown next to the method ("Visa, Mastercard, Amex", "Bitcoin, Lightning").
    description: ClassVar[Any] = ""
    #: Whether the provider can charge a saved method without the customer (auto top-up).
    supports_off_session: ClassVar[bool] = False
    #: Event type → handler (a callable taking the verified payload). Types not listed are
    #: stored as ``ignored`` and answered 200.
    handlers: ClassVar[dict[str, str]] = {}

    # -- configuration ----------------------------------------------------------------------

    @property
    def is_enabled(self) -> bool:
        """Whether the operator configured this provider (credentials present)."""
        raise NotImplementedError

    @property
    def is_simulated(self) -> bool:
        """True when the API base is on this machine (the development simulators)."""
        return False

    def fee(self, amount: Decimal) -> Decimal:
        """The processing fee added on top of a credit of ``amount``: percent + fixed, rounded
        half-up to the cent. Pure; shown to the customer before they pay."""
        percent, fixed = settings.TP_FEES.get(self.identifier, (Decimal(0), Decimal(0)))
        if percent == 0 and fixed == 0:
            return Decimal("0.00")
        return (amount * percent / 100 + fixed).quantize(CENT, rounding=ROUND_HALF_UP)

    def fee_rule(self) -> str:
        percent, fixed = settings.TP_FEES.get(self.identifier, (Decimal(0), Decimal(0)))
        if percent == 0 and fixed == 0:
            return str(_("no fee"))
        parts = []
        if percent:
            parts.append(f"{percent.normalize():f}%")
        if fixed:
            parts.append(f"${fixed.quantize(CENT)}")
        return " + ".join(parts)

    # -- the customer's side ----------------------------------------------------------------

    def checkout_origins(self) -> list[str]:
        """Origins the customer's browser is sent to (by a redirect after our own form). The
        confirmation page allows them in its CSP ``form-action``, which browsers also apply
        to redirects."""
        raise NotImplementedError

    def start(self, payment: Payment, *, return_url: str, cancel_url: str, email: str) -> None:
        """Create the payment at the provider for ``payment.total`` USD and record on
        ``payment`` where to send the customer (``checkout_url``) and the provider's id for
        it (``checkout_id``). Saving is the caller's job. Moves no money."""
        raise NotImplementedError

    def sync(self, payment: Payment) -> None:
        """Fetch where ``payment`` stands at the provider and hand the provider's object to
        ``billing.payments`` (which confirms, fails or flags it). Safe to call any number of
        times, e.g. when the customer comes back or from the periodic check."""
        raise NotImplementedError

    def on_return(self, payment: Payment, params: dict[str, str]) -> None:
        """The customer came back from the provider's page. ``params`` are the redirect's
        query parameters: they may say which object to look at, never how much was paid.
        The default asks the provider (``sync``)."""
        self.sync(payment)

    def cancel(self, payment: Payment) -> None:
        """The customer gave up on the provider's page. The default only records it (a
        payment made after all is still credited when the provider confirms it)."""
        payments.mark(payment, "canceled", _("Canceled by the customer."))

    # -- the provider's side ----------------------------------------------------------------

    def verify_webhook(self, request: HttpRequest) -> dict[str, Any]:
        """Check the signature on the raw body first, then parse it. Returns the event as a
        dict or raises :class:`InvalidWebhook`; nothing else happens before it returns."""
        raise NotImplementedError

    def event_identity(self, event: dict[str, Any]) -> tuple[str, str]:
        """(unique event id, event type) of a verified event."""
        raise NotImplementedError

    def handler_for(self, event_type: str) -> Handler | None:
        name = self.handlers.get(event_type)
        return getattr(self, name) if name else None

    # -- plumbing ---------------------------------------------------------------------------

    def http(self) -> requests.Session:
        session = getattr(self, "_session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "TokenPapa-billing"
            self._session = session
        return session

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (5, settings.TP_PAYMENT_HTTP_TIMEOUT))
        kwargs.setdefault("allow_redirects", False)
        try:
            response = self.http().request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise ProviderError(f"{self.identifier}: {type(exc).__name__}", retry=True) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderError(
                f"{self.identifier}: HTTP {response.status_code} from {method} {url}", retry=True
            )
        return response
