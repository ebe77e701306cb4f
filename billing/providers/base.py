"""The one base class of payment providers (card, PayPal, crypto).

A provider turns a :class:`~billing.models.Payment` into a page at the provider where the
customer pays, reads back where that payment stands, and reads the provider's webhooks. It
never credits or debits anything itself: every change of money goes through the services in
:mod:`billing.payments` (``confirm``, ``reverse``, ...), which lock the payment row and apply
each change once.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from billing.models import Payment

log = logging.getLogger(__name__)

CENT = Decimal("0.01")

Handler = Callable[[dict[str, Any]], None]


class ProviderError(Exception):
    """The provider could not be reached or refused a call. ``retry`` says whether asking
    again later may help (network trouble, 5xx, 429)."""

    def __init__(self, message: str, *, retry: bool = True, code: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.code = code


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


def from_cents(value: Any) -> Decimal:
    return (Decimal(int(value)) / 100).quantize(CENT)


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
        from billing import payments

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
