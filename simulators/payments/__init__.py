"""Local simulators of the three payment providers the portal uses: Stripe, PayPal and BTCPay
Server, in one process under ``/stripe``, ``/paypal`` and ``/btcpay``. For development and
tests only (production settings refuse loopback API bases).

Each accepts exactly the API calls the portal makes, shows a simple hosted page where a person
pays (or fails, or pays part), and sends webhooks signed the real way (each provider's module
lists its calls, its page and its signature):

* **Stripe** (``stripe``): Checkout Sessions, off-session PaymentIntents, charges, customers and
  payment methods; ``Stripe-Signature``. Pay page: ``/stripe/pay/{session}``.
* **PayPal** (``paypal``): Orders v2, captures, OAuth and verify-webhook-signature. Approval
  page: ``/paypal/checkoutnow?token={order}``.
* **BTCPay Server** (``btcpay``): Greenfield invoices; ``BTCPay-Sig``. Checkout page:
  ``/btcpay/i/{invoice}`` with Pay / Partial / Expire.

Operator actions a test (or a person) can trigger, as the provider's dashboard would:
``POST /stripe/_sim/refund`` ``{payment_intent, amount?}``, ``POST /stripe/_sim/dispute``
``{payment_intent, amount?, fee?}``, ``POST /stripe/_sim/disputes/{id}/close`` ``{outcome}``,
``POST /stripe/_sim/customers/{id}/decline`` ``{decline}``,
``POST /stripe/_sim/sessions/{id}/async`` ``{outcome}``; ``POST /paypal/_sim/captures/{id}/
{refund,reverse,complete,deny}``; ``POST /btcpay/_sim/invoices/{id}/pay-late``. And for the
webhooks: ``GET /_sim/events`` (every event as sent: body, headers, deliveries),
``POST /_sim/events/{id}/deliver`` (send it again, unchanged), ``POST /_sim/config``
``{auto_deliver}`` (hold deliveries for a test that orders them itself).

Run: ``python -m simulators.payments --host 127.0.0.1 --port 8003 --webhook-base
http://127.0.0.1:8000``. Credentials are read from the same environment variables as the
portal's (``STRIPE_SECRET_KEY``, ...), with the defaults in :data:`DEFAULTS`.

One module per concern, each importing only the ones listed before it:

* ``ids``: random ids in the providers' shapes (called through the module, so a test can
  replace one).
* ``common``: :class:`Config`, the webhook :class:`~.common.Outbox` and its ``/_sim`` hooks,
  times, the hosted pages' layout.
* ``stripe``, ``paypal``, ``btcpay``: one module per provider: its API, its pages, its
  webhooks and its operator actions.
* ``server``: :class:`Simulator` assembling the routes, :func:`start_in_thread`.
* ``cli``: the command line (``__main__`` runs it).
"""

from .cli import main
from .common import DEFAULTS, JSON, RETRY_DELAYS, Config, Delivery, Outbox
from .server import RunningSimulator, Simulator, start_in_thread
from .stripe import parse_form

__all__ = [
    "DEFAULTS",
    "JSON",
    "RETRY_DELAYS",
    "Config",
    "Delivery",
    "Outbox",
    "RunningSimulator",
    "Simulator",
    "main",
    "parse_form",
    "start_in_thread",
]
