from django.urls import path

from . import log_views, views, webhooks

urlpatterns = [
    path("usage/requests/", log_views.usage_requests, name="usage_requests"),
    path("usage/requests/export.csv", log_views.usage_requests_csv, name="usage_requests_csv"),
    path("usage/requests/<str:request_id>/", log_views.usage_request, name="usage_request"),
    path("billing/topup/", views.topup, name="billing_topup"),
    path("billing/topup/start/", views.topup_start, name="billing_topup_start"),
    path("billing/vouchers/redeem/", views.redeem_voucher, name="billing_redeem_voucher"),
    path("billing/settings/", views.billing_settings, name="billing_settings"),
    path("billing/payments/<uuid:uuid>/", views.payment_detail, name="billing_payment"),
    path(
        "billing/payments/<uuid:uuid>/return/", views.payment_return, name="billing_payment_return"
    ),
    path(
        "billing/payments/<uuid:uuid>/cancel/", views.payment_cancel, name="billing_payment_cancel"
    ),
    path("billing/payments/<uuid:uuid>/receipt/", views.receipt, name="billing_receipt"),
    path("billing/payments/<uuid:uuid>/receipt.pdf", views.receipt_pdf, name="billing_receipt_pdf"),
    path("webhooks/stripe/", webhooks.stripe_webhook, name="webhook_stripe"),
    path("webhooks/paypal/", webhooks.paypal_webhook, name="webhook_paypal"),
    path("webhooks/btcpay/", webhooks.btcpay_webhook, name="webhook_btcpay"),
]
