"""How the portal and the relay are served: uvicorn with deadlines on every request
(``serving.protocol``) and one setting, ``TP_TRUSTED_PROXIES``, for whose forwarded headers are
believed. Run ``python -m serving portal`` or ``python -m serving relay``."""
