"""The query strings of the catalog pages, parsed by forms. A value that does not parse (an
unknown provider, a price that is not a number) is ignored rather than answered with an error:
these are links people share and edit by hand."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .selectors import CAPABILITIES, POLICIES, SORTS, Query

CONTEXTS: tuple[tuple[int, Any], ...] = (
    (0, _("Any")),
    (8_000, _("8K tokens or more")),
    (32_000, _("32K tokens or more")),
    (128_000, _("128K tokens or more")),
    (200_000, _("200K tokens or more")),
    (1_000_000, _("1M tokens or more")),
)
MAX_TOKENS = 100_000_000  # the calculator's bound per field: far above any context window


class SomeOf(forms.MultipleChoiceField):
    """Several choices, the unknown ones dropped (not an error)."""

    widget = forms.CheckboxSelectMultiple

    def clean(self, value: Any) -> list[str]:
        return list(dict.fromkeys(v for v in self.to_python(value) if self.valid_value(v)))


def _choices(values: Iterable[str]) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


class ListQuery(forms.Form):
    q = forms.CharField(label=_("Search"), max_length=100, required=False, strip=True)
    provider = SomeOf(label=_("Provider"), required=False)
    author = SomeOf(label=_("Author"), required=False)
    input = SomeOf(label=_("Input modality"), required=False)
    output = SomeOf(label=_("Output modality"), required=False)
    capability = SomeOf(label=_("Capabilities"), choices=CAPABILITIES, required=False)
    open_weights = forms.BooleanField(label=_("Open weights"), required=False)
    min_context = forms.TypedChoiceField(
        label=_("Minimum context"), choices=CONTEXTS, coerce=int, required=False
    )
    max_input = forms.DecimalField(
        label=_("Maximum input price (USD per 1M tokens)"),
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=6,
        required=False,
    )
    max_output = forms.DecimalField(
        label=_("Maximum output price (USD per 1M tokens)"),
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=6,
        required=False,
    )
    policy = SomeOf(label=_("Data policy"), choices=POLICIES, required=False)
    region = SomeOf(label=_("Hosting region"), required=False)
    sort = forms.ChoiceField(label=_("Sort by"), choices=SORTS, required=False)

    def __init__(
        self,
        data: Any,
        *,
        providers: Iterable[str],
        authors: Iterable[str],
        modalities: Iterable[str],
        regions: Iterable[str],
    ) -> None:
        super().__init__(data)
        fields = self.fields
        modality_choices = _choices(modalities)
        fields["provider"].choices = _choices(providers)  # type: ignore[attr-defined]
        fields["author"].choices = _choices(authors)  # type: ignore[attr-defined]
        fields["input"].choices = modality_choices  # type: ignore[attr-defined]
        fields["output"].choices = modality_choices  # type: ignore[attr-defined]
        fields["region"].choices = _choices(regions)  # type: ignore[attr-defined]

    def query(self) -> Query:
        """The query, every field that did not parse left at its default."""
        self.is_valid()
        data = self.cleaned_data
        return Query(
            q=data.get("q") or "",
            provider=tuple(data.get("provider") or ()),
            author=tuple(data.get("author") or ()),
            input=tuple(data.get("input") or ()),
            output=tuple(data.get("output") or ()),
            capability=tuple(data.get("capability") or ()),
            open_weights=bool(data.get("open_weights")),
            min_context=data.get("min_context") or 0,
            max_input=data.get("max_input"),
            max_output=data.get("max_output"),
            policy=tuple(data.get("policy") or ()),
            region=tuple(data.get("region") or ()),
            sort=data.get("sort") or "",
        )


class CostQuery(forms.Form):
    """The calculator: token counts of one request."""

    input_tokens = forms.IntegerField(
        label=_("Input tokens"), min_value=0, max_value=MAX_TOKENS, initial=1000
    )
    output_tokens = forms.IntegerField(
        label=_("Output tokens"), min_value=0, max_value=MAX_TOKENS, initial=1000
    )
    cached_tokens = forms.IntegerField(
        label=_("Cached input tokens"),
        min_value=0,
        max_value=MAX_TOKENS,
        initial=0,
        required=False,
        help_text=_("Read from the prompt cache, on top of the input tokens above."),
    )
