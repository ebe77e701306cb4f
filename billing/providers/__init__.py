"""The payment providers, one module each, all built on :class:`base.PaymentProvider`. They
read the providers' objects and hand them to the payment state machine (:mod:`billing.payments`);
the registry of them, and what calls them, is :mod:`billing.topups`'s."""
