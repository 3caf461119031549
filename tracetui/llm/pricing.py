"""What an LLM call cost: reported by the span, else priced, else honestly unknown.

Order (issue 4; the source is kept in ``cost_source``: ``reported``, ``user price``,
``priced``):

1. a cost the span carries (``llm.cost.total``, ``gen_ai.cost.total``,
   ``operation.cost``...) wins — the normalizer reads those;
2. a user price file (TOML) covers local and custom models and overrides the
   bundled prices;
3. the ``genai-prices`` package's *bundled* data, at the span's start time,
   with cache-read, cache-write and reasoning tokens priced as that package
   prices them. Nothing is ever fetched.

A model that cannot be priced stays unpriced (None), never $0.

Speed: ``genai_prices.calc_price`` takes about a millisecond (it decomposes
usage through a unit registry), far too slow for the receiver's hot path.
For prices without tiers the result is linear in the token counts, so the
coefficients are measured once per (model price, set of usage keys) by
asking the package itself, and reused; tiered prices always take the slow,
exact path. Tests check the fast path against ``calc_price``.

Per call, the priced path then costs a few dictionary look-ups and a sum
of integers: the model look-up, the user-price match and the coefficients
are cached, the coefficients are summed as scaled integers (exactly the
Decimal result, see ``_IntegerPrices``), and the request timestamp is only
built when a price depends on it (conditional or tiered prices).
"""

from __future__ import annotations

import fnmatch
import logging
import tomllib
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

log = logging.getLogger(__name__)

REPORTED = "reported"
PRICED = "priced"
USER = "user price"
USER_PRICES_FILE = "prices.toml"

#: Our canonical provider names -> genai-prices provider ids.
_PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together_ai": "together",
}
#: Canonical usage fields -> genai-prices usage keys.
_USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "reasoning_tokens": "output_reasoning_tokens",
}
#: Start times (ns) from here on are not what OTLP's uint64 can carry: judged the slow way.
_MAX_NS = 1 << 64
#: At most this many entries in each per-model cache (model names come from client data).
_CACHE_LIMIT = 4096
#: A usage that satisfies every containment rule (cache and reasoning inside
#: input and output), used as the base point for measuring coefficients.
_PROBE_BASE = {
    "input_tokens": 1000,
    "output_tokens": 1000,
    "cache_read_tokens": 100,
    "cache_write_tokens": 100,
    "output_reasoning_tokens": 100,
}


@dataclass(frozen=True, slots=True)
class UserPrice:
    """USD per million tokens for one model name or glob pattern."""

    pattern: str
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, usage: dict[str, int]) -> float:
        inp = usage.get("input_tokens") or 0
        cache_read = usage.get("cache_read_tokens") or 0
        cache_write = usage.get("cache_write_tokens") or 0
        # Input tokens already include cached ones: price those at their own rate.
        uncached = max(0, inp - cache_read - cache_write)
        total = uncached * self.input + (usage.get("output_tokens") or 0) * self.output
        total += cache_read * (self.cache_read if self.cache_read is not None else self.input)
        total += cache_write * (self.cache_write if self.cache_write is not None else self.input)
        return total / 1e6


class PriceFileError(ValueError):
    """The user price file is not what tracetui expects (the message says where)."""


def load_user_prices(path: Path) -> list[UserPrice]:
    """Read a price file::

    [models."my-local-llama"]
    input = 0.0          # USD per million input tokens
    output = 0.0
    [models."gpt-4o*"]   # glob patterns work too; user prices win over bundled ones
    input = 2.0
    output = 8.0
    cache_read = 1.0     # optional (default: the input price)
    cache_write = 2.5    # optional
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceFileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"{path}: {exc}") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise PriceFileError(f"{path}: [models] must be a table of model names")
    prices = []
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise PriceFileError(f"{path}: models.{name!r} must be a table")
        try:
            values = {k: float(entry[k]) for k in ("input", "output")}
            optional = {k: float(entry[k]) for k in ("cache_read", "cache_write") if k in entry}
        except KeyError as exc:
            raise PriceFileError(f"{path}: models.{name!r} needs {exc.args[0]!r} (USD per million tokens)") from None
        except (TypeError, ValueError):
            raise PriceFileError(f"{path}: models.{name!r}: prices must be numbers") from None
        if any(v < 0 for v in (*values.values(), *optional.values())):
            raise PriceFileError(f"{path}: models.{name!r}: prices cannot be negative")
        prices.append(UserPrice(name.lower(), **values, **optional))
    # Exact names first, then patterns, most specific (longest) first.
    prices.sort(key=lambda p: (any(c in p.pattern for c in "*?["), -len(p.pattern)))
    return prices


def default_user_prices_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("tracetui", appauthor=False)) / USER_PRICES_FILE


def _split_prefix(model: str) -> tuple[str | None, str]:
    """``openai/gpt-4o`` -> (``openai``, ``gpt-4o``); names without a prefix unchanged."""
    if "/" in model:
        prefix, _, rest = model.partition("/")
        if prefix and rest:
            return prefix.lower(), rest
    return None, model


class Pricer:
    """Prices LLM calls; one per process, caches everything it learns.

    ``user_prices`` is fixed once constructed: the per-model matches are cached.
    """

    def __init__(self, user_prices: list[UserPrice] | None = None) -> None:
        self.user_prices = user_prices or []
        self._models: dict[tuple[str, str | None], object] = {}
        self._linear: dict[tuple[int, frozenset[str]], dict[str, Decimal] | None] = {}
        #: The ModelPrice objects keyed by id above, kept alive so an id is never reused.
        self._keep: list[object] = []
        #: model name -> the user price that matches it (None: no match).
        self._user_matches: dict[str, UserPrice | None] = {}

    def price(
        self, models: tuple[str | None, ...], provider: str | None, usage: dict[str, int | None], start_ns: int
    ) -> tuple[float | None, str | None]:
        """(cost in USD, source) for the first of ``models`` that can be priced; (None, None) if none can."""
        counts = {k: v for k, v in usage.items() if isinstance(v, int) and v >= 0}
        if not counts.get("input_tokens") and not counts.get("output_tokens"):
            return None, None
        if self.user_prices:
            for model in models:
                if not model:
                    continue
                user = self._user_price(model)
                if user is not None:
                    return user.cost(counts), USER
        for model in models:
            if not model:
                continue
            cost = self._bundled(model, provider, counts, start_ns)
            if cost is not None:
                return cost, PRICED
        return None, None

    def _user_price(self, model: str) -> UserPrice | None:
        # Cached per name: the match depends on the name and the (fixed) price list only.
        try:
            return self._user_matches[model]
        except KeyError:
            pass
        names = {model.lower(), _split_prefix(model)[1].lower()}
        match = None
        for price in self.user_prices:
            if any(price.pattern == n or fnmatch.fnmatchcase(n, price.pattern) for n in names):
                match = price
                break
        if len(self._user_matches) < _CACHE_LIMIT:  # span attributes are client data: bound the cache
            self._user_matches[model] = match
        return match

    def _find(self, model: str, provider: str | None):
        """(provider info, model info, its one fixed ModelPrice or None) for a model name; None if unknown."""
        key = (model, provider)
        try:
            return self._models[key]
        except KeyError:
            pass
        found = self._lookup(model, provider)
        if found is not None:
            from genai_prices.types import ModelPrice

            provider_info, model_info = found
            # ``get_prices`` returns a plain ModelPrice as is, whatever the time;
            # a list holds conditional prices, chosen by the request time.
            fixed = model_info.prices if isinstance(model_info.prices, ModelPrice) else None
            # the last item: usage keys (in the caller's order) -> _IntegerPrices for the fixed price
            found = (provider_info, model_info, fixed, {})
        if len(self._models) < _CACHE_LIMIT:
            self._models[key] = found
        return found

    @staticmethod
    def _lookup(model: str, provider: str | None):
        from genai_prices import data_snapshot

        snapshot = data_snapshot.get_snapshot()
        prefix, bare = _split_prefix(model)
        attempts: list[tuple[str, str | None]] = []
        for provider_name in (prefix, provider):
            if provider_name:
                attempts.append((bare, _PROVIDER_IDS.get(provider_name, provider_name)))
        attempts += [(bare, None), (model, None)]
        for ref, provider_id in attempts:
            try:
                return snapshot.find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
        return None

    def _bundled(self, model: str, provider: str | None, counts: dict[str, int], start_ns: int) -> float | None:
        found = self._find(model, provider)
        if found is None:
            return None
        provider_info, model_info, fixed, integer_prices = found
        if fixed is not None and start_ns < _MAX_NS:
            # One price for all times (``get_prices`` would return it whatever the
            # timestamp): no timestamp is built unless the exact path needs one.
            keys = tuple(counts)
            try:
                prices = integer_prices[keys]
            except KeyError:
                prices = self._integer_prices(fixed, counts)
                if len(integer_prices) < _CACHE_LIMIT:
                    integer_prices[keys] = prices
            if prices is not None:
                cost = prices.cost(counts)
                if cost is not None:
                    return cost
            return self._bundled_at(model, provider_info, model_info, counts, start_ns, None)
        return self._bundled_at(model, provider_info, model_info, counts, start_ns, _timestamp(start_ns))

    def _bundled_at(
        self, model: str, provider_info, model_info, counts: dict[str, int], start_ns: int, timestamp: datetime | None
    ) -> float | None:
        """The general path, at ``timestamp`` (None: the price is fixed; built only for the exact path).

        A timestamp that can fail to build (a start time beyond uint64) is built
        by the caller, outside the ``try``, as it always was.
        """
        usage = {_USAGE_KEYS[k]: v for k, v in counts.items() if k in _USAGE_KEYS}
        try:
            model_price = model_info.prices if timestamp is None else model_info.get_prices(timestamp)
            coefficients = self._coefficients(model_price, frozenset(usage))
            if coefficients is not None:
                return float(sum((coefficients[k] * v for k, v in usage.items()), Decimal(0)))
            return float(self._exact(model_info, provider_info, usage, timestamp or _timestamp(start_ns)))
        except Exception as exc:  # inconsistent counts (cache > input...), odd data: leave it unpriced
            log.debug("cannot price %s: %s", model, exc)
            return None

    def _integer_prices(self, model_price, counts: dict[str, int]) -> _IntegerPrices | None:
        """_IntegerPrices for the keys of ``counts``; None leaves every call to the Decimal path
        (prices that are not linear, coefficients the package fails to measure or that are not finite).
        """
        usage_keys = frozenset(_USAGE_KEYS[k] for k in counts if k in _USAGE_KEYS)
        try:
            coefficients = self._coefficients(model_price, usage_keys)
        except Exception:  # noqa: BLE001 - _bundled_at meets (and logs) the same failure
            return None
        if coefficients is None or not all(c.is_finite() for c in coefficients.values()):
            return None
        return _IntegerPrices([(k, coefficients[_USAGE_KEYS[k]]) for k in counts if k in _USAGE_KEYS])

    @staticmethod
    def _exact(model_info, provider_info, usage: dict[str, int], timestamp: datetime) -> Decimal:
        from genai_prices import Usage

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model_info.calc_price(Usage(**usage), provider_info, genai_request_timestamp=timestamp).total_price

    def _coefficients(self, model_price, keys: frozenset[str]) -> dict[str, Decimal] | None:
        """Per-token prices for these usage keys, measured with the package; None when not linear."""
        cache_key = (id(model_price), keys)
        try:
            return self._linear[cache_key]
        except KeyError:
            pass
        from genai_prices import Usage
        from genai_prices.types import TieredPrices

        coefficients: dict[str, Decimal] | None = None
        if not any(isinstance(v, TieredPrices) for v in vars(model_price).values()):
            base = {k: _PROBE_BASE[k] for k in keys}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base_price = model_price.calc_price(Usage(**base))["total_price"]
                coefficients = {}
                for key in keys:
                    probe = dict(base)
                    # grow the container with its part, so containment always holds
                    probe[key] += 1
                    if key.startswith("cache_"):
                        probe["input_tokens"] = probe.get("input_tokens", 0) + 1
                    elif key == "output_reasoning_tokens":
                        probe["output_tokens"] = probe.get("output_tokens", 0) + 1
                    coefficients[key] = model_price.calc_price(Usage(**probe))["total_price"] - base_price
                # containers were grown with their parts: take their share back out
                for part, container in (("cache_read_tokens", "input_tokens"), ("cache_write_tokens", "input_tokens"),
                                        ("output_reasoning_tokens", "output_tokens")):  # fmt: skip
                    if part in coefficients and container in coefficients:
                        coefficients[part] -= coefficients[container]
                check = sum((coefficients[k] * v for k, v in base.items()), Decimal(0))
            if check != base_price:  # not linear after all (a fixed fee?): use the exact path
                coefficients = None
        self._linear[cache_key] = coefficients
        self._keep.append(model_price)
        return coefficients


def _finite_exponent(value: Decimal) -> int:
    """A finite Decimal's exponent (``as_tuple()`` gives 'n', 'N' or 'F' only for NaN and infinities)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), value
    return exponent


class _IntegerPrices:
    """The linear price of one set of usage keys, summed in integers: fast and exactly as in Decimal.

    The Decimal sum ``sum(c * v for ...)`` is exact as long as no intermediate value
    needs more than 28 digits (the default context, which tracetui never changes), and
    then ``float`` of it is the correctly rounded value of that exact sum, as is Python's
    integer true division ``S / 10**n`` of the same sum S scaled to integers. Usage big
    enough to need rounding in Decimal is left to the Decimal path (``cost`` returns
    None), so the results are the same.
    """

    __slots__ = ("limit", "scale", "terms")

    def __init__(self, coefficients: list[tuple[str, Decimal]]) -> None:
        """``coefficients``: (key of the counts, its finite Decimal price per token)."""
        parts = [(k, c.as_tuple(), _finite_exponent(c)) for k, c in coefficients]
        exponent = min([0, *(e for _, _, e in parts)])
        #: (counts key, coefficient * 10**-exponent, an exact int)
        self.terms = tuple(
            (k, (-1 if t.sign else 1) * int("".join(map(str, t.digits))) * 10 ** (e - exponent)) for k, t, e in parts
        )
        self.scale = 10**-exponent
        # Every product and partial sum, scaled to integers, is at most
        # sum(|coefficient|) * max(count): below 10**28 nothing rounds in Decimal.
        self.limit = (10**28 - 1) // max(1, sum(abs(c) for _, c in self.terms))

    def cost(self, counts: dict[str, int]) -> float | None:
        total = 0
        limit = self.limit
        for key, coefficient in self.terms:
            count = counts[key]
            if count > limit:
                return None
            total += coefficient * count
        return total / self.scale


def _timestamp(start_ns: int) -> datetime:
    """The request time prices are looked up at: the span's start, or now when the span has none."""
    return datetime.fromtimestamp(max(0, start_ns) / 1e9, tz=UTC) if start_ns > 0 else datetime.now(tz=UTC)


_pricer: Pricer | None = None


def configure(user_prices_path: Path | None = None) -> Pricer:
    """Set the process-wide pricer (the receiver calls this once at start)."""
    global _pricer
    path = user_prices_path or default_user_prices_path()
    prices: list[UserPrice] = []
    if user_prices_path is not None or path.exists():
        prices = load_user_prices(path)
    _pricer = Pricer(prices)
    return _pricer


def pricer() -> Pricer:
    global _pricer
    if _pricer is None:
        _pricer = Pricer()
    return _pricer
