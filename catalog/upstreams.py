"""The providers ``manage.py importcatalog`` imports from models.dev, and how each is reached.

One entry per provider: ``source`` is its id in models.dev's data, ``slug`` ours (models.dev's
where it reads well; the catalog file's for the four providers it already lists). For those
four, catalog/catalog.toml gives the name, API shape, base URL, website and options (its
``options`` are the ones used; a test keeps the rest of both in step): see ``catalog.importer``.

Data policy (``trains_on_prompts``, ``prompt_retention_days``, ``region``) is filled only where
the provider's published API terms state it, for requests made with a paid API key; ``None``
and ``""`` mean "not known", never "no". ``options`` are the provider's request quirks, read by
the relay's adapter (see ``Provider.options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Upstream:
    source: str  # the provider's id in models.dev
    slug: str
    name: str
    api_shape: str  # "openai" (OpenAI-compatible) or "anthropic" (Messages API)
    base_url: str
    website: str
    doc_url: str
    # The lab whose own API this is (its models' author); empty for hosts of others' models.
    author: str = ""
    region: str = ""
    trains_on_prompts: bool | None = None
    prompt_retention_days: int | None = None
    privacy_url: str = ""
    options: dict[str, Any] = field(default_factory=dict)


UPSTREAMS: tuple[Upstream, ...] = (
    Upstream(
        source="openai",
        slug="openai",
        name="OpenAI",
        api_shape="openai",
        base_url="https://api.openai.com/v1",
        website="https://openai.com",
        doc_url="https://platform.openai.com/docs/models",
        author="OpenAI",
        region="US",
        # API data is not used for training; kept up to 30 days for abuse monitoring.
        trains_on_prompts=False,
        prompt_retention_days=30,
        privacy_url="https://openai.com/enterprise-privacy/",
        options={},
    ),
    Upstream(
        source="anthropic",
        slug="anthropic",
        name="Anthropic",
        api_shape="anthropic",
        base_url="https://api.anthropic.com/v1",
        website="https://www.anthropic.com",
        doc_url="https://docs.anthropic.com/en/docs/about-claude/models",
        author="Anthropic",
        region="US",
        # Commercial terms: API inputs and outputs are not used for training, deleted within
        # 30 days.
        trains_on_prompts=False,
        prompt_retention_days=30,
        privacy_url="https://www.anthropic.com/legal/privacy",
        options={},
    ),
    Upstream(
        source="google",
        slug="google",
        name="Google Gemini",
        api_shape="openai",
        # The Gemini API's OpenAI-compatible endpoint.
        base_url="https://generativelanguage.googleapis.com/v1beta/openai",
        website="https://ai.google.dev",
        doc_url="https://ai.google.dev/gemini-api/docs/models",
        author="Google",
        # Paid tier: prompts are not used to improve products; kept 55 days for abuse checks.
        trains_on_prompts=False,
        prompt_retention_days=55,
        privacy_url="https://ai.google.dev/gemini-api/terms",
        options={
            # The OpenAI-compatible endpoint's name for the output cap (see relay quirks).
            "max_tokens_param": "max_tokens",
        },
    ),
    Upstream(
        source="mistral",
        slug="mistral",
        name="Mistral AI",
        api_shape="openai",
        base_url="https://api.mistral.ai/v1",
        website="https://mistral.ai",
        doc_url="https://docs.mistral.ai/getting-started/models/",
        author="Mistral AI",
        region="EU",
        # Paid API: not used for training; kept 30 days for abuse monitoring.
        trains_on_prompts=False,
        prompt_retention_days=30,
        privacy_url="https://mistral.ai/terms/#privacy-policy",
        options={},
    ),
    Upstream(
        source="deepseek",
        slug="deepseek",
        name="DeepSeek",
        api_shape="openai",
        base_url="https://api.deepseek.com/v1",
        website="https://www.deepseek.com",
        doc_url="https://api-docs.deepseek.com/quick_start/pricing",
        author="DeepSeek",
        region="CN",
        # Its privacy policy reserves the use of inputs to train and improve its models.
        trains_on_prompts=True,
        privacy_url="https://cdn.deepseek.com/policies/en-US/deepseek-privacy-policy.html",
        options={},
    ),
    Upstream(
        source="xai",
        slug="xai",
        name="xAI",
        api_shape="openai",
        base_url="https://api.x.ai/v1",
        website="https://x.ai",
        doc_url="https://docs.x.ai/docs/models",
        author="xAI",
        region="US",
        # API requests are not used for training; kept 30 days.
        trains_on_prompts=False,
        prompt_retention_days=30,
        privacy_url="https://x.ai/legal/privacy-policy",
        options={
            # Grok's reasoning models refuse penalties and stop sequences with a 400
            # (docs.x.ai, reasoning); the relay refuses them first, clearly.
            "reasoning_models": ["grok-3-mini", "grok-4", "grok-code"],
            "reasoning_unsupported": {
                "presence_penalty": "refuse",
                "frequency_penalty": "refuse",
                "stop": "refuse",
            },
        },
    ),
    Upstream(
        source="alibaba",
        slug="alibaba",
        name="Alibaba Cloud (Qwen)",
        api_shape="openai",
        # Model Studio's international (Singapore) OpenAI-compatible mode.
        base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        website="https://www.alibabacloud.com/en/product/modelstudio",
        doc_url="https://www.alibabacloud.com/help/en/model-studio/models",
        author="Qwen (Alibaba)",
        region="SG",
        options={},
    ),
    Upstream(
        source="zhipuai",
        slug="zhipuai",
        name="Zhipu AI",
        api_shape="openai",
        base_url="https://open.bigmodel.cn/api/paas/v4",
        website="https://bigmodel.cn",
        doc_url="https://docs.bigmodel.cn",
        author="Zhipu (Z.ai)",
        region="CN",
        options={},
    ),
    Upstream(
        source="moonshotai",
        slug="moonshotai",
        name="Moonshot AI",
        api_shape="openai",
        base_url="https://api.moonshot.ai/v1",
        website="https://www.moonshot.ai",
        doc_url="https://platform.moonshot.ai/docs",
        author="Moonshot AI",
        options={},
    ),
    Upstream(
        source="minimax",
        slug="minimax",
        name="MiniMax",
        # models.dev's endpoint for it: MiniMax's Anthropic-compatible Messages API.
        api_shape="anthropic",
        base_url="https://api.minimax.io/anthropic/v1",
        website="https://www.minimax.io",
        doc_url="https://platform.minimax.io/docs",
        author="MiniMax",
        options={},
    ),
    Upstream(
        source="cohere",
        slug="cohere",
        name="Cohere",
        api_shape="openai",
        # Cohere's OpenAI compatibility API.
        base_url="https://api.cohere.ai/compatibility/v1",
        website="https://cohere.com",
        doc_url="https://docs.cohere.com/docs/models",
        author="Cohere",
        privacy_url="https://cohere.com/privacy",
        options={},
    ),
    Upstream(
        source="groq",
        slug="groq",
        name="Groq",
        api_shape="openai",
        base_url="https://api.groq.com/openai/v1",
        website="https://groq.com",
        doc_url="https://console.groq.com/docs/models",
        region="US",
        # Inference inputs and outputs are not retained by default, nor trained on.
        trains_on_prompts=False,
        prompt_retention_days=0,
        privacy_url="https://groq.com/privacy-policy/",
        options={
            # "Currently unsupported OpenAI features" (console.groq.com/docs/openai): these
            # fields are a 400, and n must be 1.
            "unsupported": {
                "logprobs": "refuse",
                "top_logprobs": "refuse",
                "logit_bias": "refuse",
                "n": {"only": [1]},
            },
        },
    ),
    Upstream(
        source="togetherai",
        slug="togetherai",
        name="Together AI",
        api_shape="openai",
        base_url="https://api.together.xyz/v1",
        website="https://www.together.ai",
        doc_url="https://docs.together.ai/docs/serverless-models",
        region="US",
        # Customer prompts are not used for training unless the customer opts in.
        trains_on_prompts=False,
        privacy_url="https://www.together.ai/privacy",
        options={},
    ),
    Upstream(
        source="fireworks-ai",
        slug="fireworks",
        name="Fireworks AI",
        api_shape="openai",
        base_url="https://api.fireworks.ai/inference/v1",
        website="https://fireworks.ai",
        doc_url="https://fireworks.ai/models",
        region="US",
        # Zero data retention by default for open models on its serverless API.
        trains_on_prompts=False,
        prompt_retention_days=0,
        privacy_url="https://fireworks.ai/privacy-policy",
        options={},
    ),
    Upstream(
        source="deepinfra",
        slug="deepinfra",
        name="DeepInfra",
        api_shape="openai",
        base_url="https://api.deepinfra.com/v1/openai",
        website="https://deepinfra.com",
        doc_url="https://deepinfra.com/models",
        region="US",
        # Inference data is not stored, nor used for training.
        trains_on_prompts=False,
        prompt_retention_days=0,
        privacy_url="https://deepinfra.com/privacy",
        options={},
    ),
    Upstream(
        source="cerebras",
        slug="cerebras",
        name="Cerebras",
        api_shape="openai",
        base_url="https://api.cerebras.ai/v1",
        website="https://www.cerebras.ai",
        doc_url="https://inference-docs.cerebras.ai/models/overview",
        options={
            # Fields Cerebras's OpenAI compatibility answers with a 400.
            "unsupported": {
                "frequency_penalty": "refuse",
                "presence_penalty": "refuse",
                "logit_bias": "refuse",
                "parallel_tool_calls": "refuse",
                "service_tier": "refuse",
            },
        },
    ),
    Upstream(
        source="nebius",
        slug="nebius",
        name="Nebius Token Factory",
        api_shape="openai",
        base_url="https://api.tokenfactory.nebius.com/v1",
        website="https://nebius.com",
        doc_url="https://docs.tokenfactory.nebius.com",
        options={},
    ),
    Upstream(
        source="novita-ai",
        slug="novita",
        name="Novita AI",
        api_shape="openai",
        base_url="https://api.novita.ai/openai",
        website="https://novita.ai",
        doc_url="https://novita.ai/docs/guides/llm-api",
        options={},
    ),
    Upstream(
        source="siliconflow",
        slug="siliconflow",
        name="SiliconFlow",
        api_shape="openai",
        # The international platform (siliconflow.cn is the mainland one).
        base_url="https://api.siliconflow.com/v1",
        website="https://www.siliconflow.com",
        doc_url="https://docs.siliconflow.com/en/userguide/introduction",
        options={},
    ),
    Upstream(
        source="scaleway",
        slug="scaleway",
        name="Scaleway",
        api_shape="openai",
        base_url="https://api.scaleway.ai/v1",
        website="https://www.scaleway.com",
        doc_url="https://www.scaleway.com/en/docs/generative-apis/reference-content/supported-models/",
        # Generative APIs run in its Paris data centres.
        region="EU",
        privacy_url="https://www.scaleway.com/en/privacy-policy/",
        options={},
    ),
)

BY_SLUG: dict[str, Upstream] = {upstream.slug: upstream for upstream in UPSTREAMS}
