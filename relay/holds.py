"""Money and limits in Redis for one request.

Before it is forwarded: the most it can cost (:meth:`Holds.worst_case`), held against the
balance, the key's spend cap and its rate limits in one script (:meth:`Holds.hold`). At its
end: the actual cost, never above the hold (:meth:`Holds.charge`), settled
(:meth:`Holds.settle`); or, when nothing is owed, the hold released (:meth:`Holds.release`).
The Lua scripts are in :mod:`core.state`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

from core import state

from . import media, prices
from .config import Config
from .errors import RelayError
from .request import Request
from .usage import Usage

log = logging.getLogger("relay")

# Prompt tokens held for a request with an image, audio or a file when the model's context
# window is not in the catalog.
MEDIA_PROMPT_CEILING = 1_000_000
# Providers write a prompt of their own around tool definitions (Anthropic's is about 350
# tokens): a small body with tools can be billed more prompt tokens than it has bytes.
TOOLS_PROMPT_ALLOWANCE = 1024


class Holds:
    """Worst case, reserve, charge, settle and release (a part of :class:`relay.app.Relay`)."""

    # The balance scripts by name ("reserve", "settle", "release"), loaded at start-up.
    scripts: dict[str, Callable[..., Awaitable[Any]]]
    config: Config

    def worst_case(self, req: Request, raw_size: int, api: str) -> int:
        """Nano-dollars to hold: the most the request can cost at catalog prices, on the
        dearest of the routes it may be served by (of every model it may fall back to).

        The prompt: text is bounded by the body's size in bytes (capped by the context window),
        plus an allowance for the prompt a provider writes around tool definitions; an image,
        audio or a file is billed on its content, so a request with one holds the whole
        context window. Every prompt token at the dearest prompt price (all of it could be
        1-hour cache writes) and every output token at the dearest output price (all of it
        could be reasoning or audio), at the dearest long-context tier a prompt that size can
        reach; its images and seconds of audio at their own prices where the model has them;
        the model's per-request fee; and the most output the request allows. Also sets the
        tokens the request counts against a tokens-per-minute limit, and ``req.price`` to the
        price of the first route (each attempt sets its route's)."""
        model = req.model
        plan = req.plan
        if plan is None and (prices.uniform(model) or not req.routes):
            # The common case: one model, one price whichever route serves.
            price = req.price = prices.of_model(model)
            req.media = media.inspect(req.body, api, measure_audio=price.price.audio_second > 0)
            return self._most(req, model, price, raw_size, api)
        tries = plan.tries if plan is not None else [(model, r) for r in req.routes]
        # A route served with the account's own key (BYOK) may cost only its fee; a request
        # that may fall back to the operator's routes holds for their price too.
        pairs: list[tuple[dict[str, Any], prices.NanoPrice, Fraction | None]] = []
        for m, route in tries:
            pair = (m, prices.of_route(m, route), self.share(route))
            if not any(m is p[0] and pair[1] is p[1] and pair[2] == p[2] for p in pairs):
                pairs.append(pair)
        req.price = pairs[0][1]
        req.media = media.inspect(
            req.body, api, measure_audio=any(p.price.audio_second > 0 for _, p, _ in pairs)
        )
        most = 0
        for m, price, share in pairs:
            most = max(most, self._most(req, m, price, raw_size, api, share))
        return most

    def share(self, route: dict[str, Any]) -> Fraction | None:
        """The share of the price a request served by ``route`` pays: the BYOK fee's for a
        route with the account's own key, else None (the whole price)."""
        if not route.get("byok"):
            return None
        return Fraction(self.config.byok_fee_percent) / 100

    def _most(
        self,
        req: Request,
        model: dict[str, Any],
        price: prices.NanoPrice,
        raw_size: int,
        api: str,
        share: Fraction | None = None,
    ) -> int:
        window = model.get("context_window") or 0
        req.prompt_estimate = min(raw_size, window) if window else raw_size
        if req.media.other:
            prompt = window or MEDIA_PROMPT_CEILING
        else:
            prompt = raw_size + (TOOLS_PROMPT_ALLOWANCE if req.body.get("tools") else 0)
            if window:
                prompt = min(prompt, window)
        completion = 0
        requested = 0
        if api == "chat":
            body = req.body
            n = body.get("n") or 1
            requested = (body.get("max_completion_tokens") or body.get("max_tokens") or 0) * n
            completion = requested or (model.get("max_output_tokens") or 8192) * n
        elif api == "completions":
            body = req.body
            n = max(body.get("n") or 1, body.get("best_of") or 1)
            requested = (body.get("max_tokens") or 0) * n
            completion = requested or (model.get("max_output_tokens") or 8192) * n
        elif api == "messages":
            requested = completion = int(req.body["max_tokens"])
        req.tokens_counted = math.ceil(raw_size / 4) + requested
        return price.most(
            prompt_tokens=prompt,
            completion_tokens=completion,
            images=req.media.images,
            audio_ms=req.media.audio_ms,
            share=share,
        )

    async def hold(self, req: Request, nanos: int) -> None:
        key = req.key
        account = req.account
        cap = key.get("cap")
        if cap is not None:
            period, _, end = state.period_bounds(key.get("cap_period") or "month", req.started)
            req.cap_key = state.key_cap(account, key["id"], period)
            cap_ttl = state.period_ttl(end, req.started)
        else:
            req.cap_key = state.no_cap(account)
            cap_ttl = 0
        mcap = key.get("mcap")
        if mcap is not None:
            period, _, end = state.period_bounds(key.get("mcap_period") or "month", req.started)
            req.member_cap_key = state.member_cap(account, key["member"], period)
            mcap_ttl = state.period_ttl(end, req.started)
        else:
            req.member_cap_key = None
            mcap_ttl = 0
        rpm, tpm = key.get("rpm"), key.get("tpm")
        minute = int(req.started // 60)
        req.tpm_key = state.rate_window(account, key["id"], "t", minute)
        req.hold_nanos = nanos
        status, requests_used, tokens_used = await self.scripts["reserve"](
            keys=[
                state.account(account),
                state.account_holds(account),
                state.hold_times(account),
                req.cap_key,
                state.rate_window(account, key["id"], "r", minute),
                req.tpm_key,
                req.member_cap_key or state.no_cap(account),
            ],
            args=[
                req.id,
                nanos,
                int(req.started),
                cap if cap is not None else -1,
                cap_ttl,
                rpm if rpm is not None else -1,
                tpm if tpm is not None else -1,
                req.tokens_counted,
                120,
                mcap if mcap is not None else -1,
                mcap_ttl,
            ],
        )
        reset = 60 - int(req.started) % 60
        if rpm is not None or tpm is not None:
            req.rate_headers = self._rate_headers(rpm, tpm, requests_used, tokens_used, reset)
        if status == 1:
            req.held = True
            return
        if status in (-3, -4):
            what = "requests" if status == -3 else "tokens"
            raise RelayError(
                429,
                f"Rate limit reached for this key: {what} per minute. Retry in {reset}s.",
                type=what,
                code="rate_limit_exceeded",
                headers=[(b"retry-after", str(reset).encode())],
            )
        if status == -2:
            raise RelayError(
                402,
                "This key's spend cap for the period is reached.",
                type="insufficient_quota",
                code="spend_cap_reached",
            )
        if status == -5:
            raise RelayError(
                402,
                "Your spend cap in this organization for the period is reached.",
                type="insufficient_quota",
                code="member_spend_cap_reached",
            )
        raise RelayError(
            402,
            "Your balance cannot cover this request's maximum cost. Top up, or lower max_tokens.",
            type="insufficient_quota",
            code="insufficient_quota",
        )

    @staticmethod
    def _rate_headers(
        rpm: int | None, tpm: int | None, requests: int, tokens: int, reset: int
    ) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if rpm is not None:
            out += [
                (b"x-ratelimit-limit-requests", str(rpm).encode()),
                (b"x-ratelimit-remaining-requests", str(max(0, rpm - requests)).encode()),
                (b"x-ratelimit-reset-requests", f"{reset}s".encode()),
            ]
        if tpm is not None:
            out += [
                (b"x-ratelimit-limit-tokens", str(tpm).encode()),
                (b"x-ratelimit-remaining-tokens", str(max(0, tpm - tokens)).encode()),
                (b"x-ratelimit-reset-tokens", f"{reset}s".encode()),
            ]
        return out

    async def release(self, req: Request) -> None:
        req.held = False
        await self.scripts["release"](
            keys=[
                state.account(req.account),
                state.account_holds(req.account),
                state.hold_times(req.account),
                req.cap_key or state.no_cap(req.account),
                req.member_cap_key or state.no_cap(req.account),
            ],
            args=[req.id],
        )

    def charge(self, req: Request, usage: Usage) -> int:
        """Nano-dollars to charge for ``usage`` at the request's price, at most its hold."""
        assert req.price is not None  # noqa: S101 - narrows for mypy: handle() prices before it holds
        reported = req.price.nanos(
            **usage.counts(),
            images=req.media.images,
            audio_ms=req.media.audio_ms,
            share=self.share(req.route),
        )
        # Never more than the hold: the balance and the key's cap were checked for that much
        # and no more. Above it (an upstream reporting more than the request could use), the
        # rest is the operator's to bear; the worker records it as unbilled.
        nanos = reported if reported <= req.hold_nanos else req.hold_nanos
        if reported > nanos:
            log.warning(
                "usage of %s (%s via %s) above its hold: %d > %d nano-dollars",
                req.id,
                req.model["id"],
                req.route["provider"],
                reported,
                nanos,
            )
        return nanos

    def settle(self, req: Request, nanos: int, usage: Usage) -> Awaitable[Any]:
        """Move the hold to the account's unposted spend at ``nanos``, and correct the key's
        tokens-per-minute count to the tokens used. Returns the script call for the caller to
        await (no coroutine of its own: one await fewer on every request); the caller marks
        the request no longer held once it succeeded."""
        account = req.account
        return self.scripts["settle"](
            keys=[
                state.account(account),
                state.account_holds(account),
                state.account_unposted(account),
                state.hold_times(account),
                req.cap_key or state.no_cap(account),
                req.tpm_key or state.rate_window(account, 0, "t", 0),
                req.member_cap_key or state.no_cap(account),
            ],
            args=[
                req.id,
                nanos,
                usage.prompt_tokens + usage.completion_tokens - req.tokens_counted,
            ],
        )
