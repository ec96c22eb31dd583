"""What a model call costs: a per-model price table (USD per million tokens) and the arithmetic.

The defaults are configurable ESTIMATES, not quotes: set `KNIGHT_PRICES` to a JSON file such as
`{"claude-sonnet-5-5": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}`
to replace any entry or add a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from knight.errors import UsageError

PRICES_ENV = "KNIGHT_PRICES"


class ModelPrice(BaseModel):
    """USD per million tokens for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float
    output: float
    cache_write: float  # 5-minute ephemeral cache writes
    cache_read: float


# Estimates in the shape of Anthropic's published list prices (cache write 1.25x input, cache
# read 0.1x input). Override them with KNIGHT_PRICES; they are never fetched from anywhere.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-opus-5-5": ModelPrice(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-sonnet-5-5": ModelPrice(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-haiku-5-5": ModelPrice(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
}


class PriceConfigError(UsageError):
    """The KNIGHT_PRICES file is missing or not a valid price table."""


def load_prices(path: str | os.PathLike[str] | None = None) -> dict[str, ModelPrice]:
    """The default table overlaid with the JSON file at `path` (default: $KNIGHT_PRICES, if set)."""
    prices = dict(DEFAULT_PRICES)
    path = path if path is not None else os.environ.get(PRICES_ENV) or None
    if path is None:
        return prices
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PriceConfigError(f"cannot read price table {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PriceConfigError(f"price table {path} must be a JSON object of model -> prices")
    for model, entry in raw.items():
        try:
            prices[model] = ModelPrice.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PriceConfigError(f"price table {path}, {model}.{where}: {first['msg']}") from exc
    return prices


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice:
    """The price of `model`: exact id, else the longest known prefix (dated ids), else the dearest.

    Falling back to the most expensive entry keeps a `--max-cost` budget from under-counting.
    """
    if model in prices:
        return prices[model]
    prefixes = [name for name in prices if model.startswith(name)]
    if prefixes:
        return prices[max(prefixes, key=len)]
    return max(prices.values(), key=lambda p: (p.output, p.input))


def call_cost(
    price: ModelPrice,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD for one call. `input_tokens` excludes cached tokens, as the API reports it."""
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_write_tokens * price.cache_write
        + cache_read_tokens * price.cache_read
    )
    return total / 1_000_000
