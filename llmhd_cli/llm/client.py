"""The calling layer: every provider call goes through `LLMClient`.

For each request the client looks the answer up in the cache, else checks the budget, sends
it (bounded concurrency, retries with backoff; a request another process on the same cache is
already paying for is waited for, `llmhd_cli.llm.claims`), stores the answer the moment it
arrives (so an interrupted run resumes without paying twice), adds it to the ledger, and parses it with
the request's parser (one re-ask on a malformed answer, itself cached). Failures come back as
results with ``ok=False``; only an unreachable server or an error every call would hit (bad
key, unknown model) stops a run, as an `LLMHDError`, after everything paid for is stored.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError
from llmhd_cli.llm.cache import AnswerStore, StoredAnswer, cache_key
from llmhd_cli.llm.claims import ClaimStore
from llmhd_cli.llm.ledger import Ledger
from llmhd_cli.llm.pricing import PriceTable, load_prices
from llmhd_cli.llm.tokens import count_prompt_tokens
from llmhd_cli.llm.usage import Usage, UsageMeter
from llmhd_cli.redact import mask_secrets, mask_url, url_secrets

log = logging.getLogger(__name__)

GENERIC_REASK = ("Your previous answer did not follow the required output format. "
                 "Answer again, following the output format exactly, and write nothing else.")
# Output tokens assumed for the budget estimate when a request sets no max_tokens.
DEFAULT_MAX_TOKENS_ESTIMATE = 1024
MAX_RETRY_AFTER = 120.0  # seconds; a server asking for longer is treated as asking for this

BUDGET = "budget"
ABORTED = "aborted"


@dataclass
class LLMResult:
    """The outcome of one request.

    On a cache hit, ``cached`` is True, ``cost`` is 0 (nothing was paid now) and the token
    counts are those of the stored answer. With a re-ask, text/logprobs are the re-ask's and
    tokens/cost add up both calls. Without a parser, ``value`` is the text.
    """

    request: LLMRequest
    ok: bool
    value: Any
    text: str
    cached: bool
    input_tokens: int
    output_tokens: int
    cost: float
    error: str | None
    usage_reported: bool = True
    reasked: bool = False
    logprobs: list[dict[str, float]] | None = field(default=None, repr=False)
    tokens: list[str] | None = field(default=None, repr=False)


@dataclass
class RunStats(Usage):
    """What this client did, over all its `run` calls: its `Usage` (paid tokens only) and more.

    Per template (phase), the same counters are in ``LLMClient.usage`` (a `UsageMeter`).
    """

    requests: int = 0
    reasks: int = 0
    retries: int = 0
    budget_skipped: int = 0
    budget_exhausted: bool = False
    cache_malformed: int = 0  # cache entries that were not readable answers: misses, asked again
    claim_waits: int = 0  # requests that waited for another process fetching the same answer
    prompts_cut: int = 0  # requests whose template cut texts to fit the model's context window
    texts_cut: int = 0  # texts those templates shortened or left out


@dataclass
class _Outcome:
    answer: StoredAnswer | None = None
    cached: bool = False
    cost: float = 0.0
    error: str | None = None
    key: str | None = None


class _Abort(Exception):
    """Raised inside a worker when the run has been stopped."""


class LLMClient:
    """Cached, counted, budgeted, concurrent calls to one provider."""

    def __init__(self, provider: Provider, cache_dir: Path, *, prices: PriceTable | None = None,
                 concurrency: int = 4, max_cost: float | None = None, refresh: bool = False,
                 max_retries: int = 5, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> None:
        if concurrency < 1:
            raise LLMHDError(f"--concurrency: must be at least 1, got {concurrency}")
        self.provider = provider
        self.cache_dir = Path(cache_dir)
        self.store = AnswerStore(self.cache_dir, on_malformed=self._malformed_entry)
        self.ledger = Ledger(self.cache_dir)
        # Paid answers are claimed across processes; local computations (embed, oracle) are not worth it.
        self.claims = ClaimStore(self.cache_dir) if provider.cacheable and provider.generative else None
        self.prices = prices if prices is not None else load_prices()
        self.concurrency = concurrency
        self.max_cost = max_cost
        self.refresh = refresh
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = RunStats()
        self.usage = UsageMeter()  # the stats' usage counters, per template
        self._lock = threading.Lock()
        self._reserved = 0.0  # budget estimates of calls in flight
        self._inflight: dict[str, threading.Event] = {}
        self._fresh: set[str] = set()  # keys written by this client (valid hits even with refresh)
        self._pending_hits: dict[str, int] = {}  # template -> hits not yet in the ledger
        self._stop = threading.Event()
        self._abort_message: str | None = None
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="llmhd-llm")
        self._closed = False

    # ------------------------------------------------------------------ public

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, requests: list[LLMRequest],
            on_result: Callable[[LLMResult], None] | None = None) -> list[LLMResult]:
        """Answer every request (in order); ``on_result`` is called in this thread as each finishes."""
        if self._closed:
            raise RuntimeError("LLMClient is closed")
        self._stop.clear()
        self._abort_message = None
        results: list[LLMResult | None] = [None] * len(requests)
        futures: dict[Any, int] = {}
        cut = [r.cut for r in requests if getattr(r, "cut", 0)]
        if cut:
            with self._lock:
                self.stats.prompts_cut += len(cut)
                self.stats.texts_cut += sum(cut)
        try:
            misses: list[int] = []
            for i, request in enumerate(requests):
                # Hits are answered here, without a thread hop: cached reruns are then cheap.
                quick = self._quick(request)
                if quick is None:
                    misses.append(i)
                    continue
                results[i] = quick
                if on_result is not None:
                    on_result(quick)
            if misses:
                # Providers that batch (embed encodes texts together) prepare all misses at once.
                self.provider.warm([requests[i] for i in misses])
            for i in misses:
                futures[self._pool.submit(self._one, requests[i])] = i
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if on_result is not None and result.error != ABORTED:
                    on_result(result)
        except BaseException:
            # Ctrl-C or a failing callback: send nothing more; what was paid for is already stored.
            self._stop.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            self._flush_hits()
        if self._abort_message:
            raise LLMHDError(self._abort_message)
        return [r for r in results if r is not None]

    def supports_bulk(self, task: str) -> bool:
        """Whether `run_bulk` answers ``task``: a local provider that declares it (`Provider.bulk_tasks`)."""
        return not self.provider.generative and task in self.provider.bulk_tasks

    def run_bulk(self, task: str, template: str, variables: list[dict[str, Any]]) -> list[Any]:
        """The provider's values for many ``task`` requests in one call (None where one failed).

        For local, free providers only (`supports_bulk`): no prompt, no disk cache, no claim.
        Each value counts as one answered call with no tokens and no cost, in the stats and in
        the ledger (one write per call of this method); a failed call counts every request as
        a failure, and an error every call would hit stops the run as `run` does.
        """
        if self._closed:
            raise RuntimeError("LLMClient is closed")
        if not variables:
            return []
        n = len(variables)
        try:
            values = list(self.provider.bulk(task, variables))
            if len(values) != n:
                raise ProviderError(f"provider '{self.provider.name}' answered {len(values)} of {n} requests")
        except ProviderError as exc:
            message = self.scrub(_short(str(exc)))
            if exc.fatal:
                raise LLMHDError(message) from None
            log.info("bulk %s request of %d failed: %s", template, n, message)
            values = [None] * n
        except LLMHDError as exc:  # a user-fixable problem (missing model files...): stop with its message
            raise LLMHDError(self.scrub(str(exc))) from None
        except Exception as exc:  # a provider bug must not take the whole run down
            log.exception("provider %s crashed", self.provider.name)
            log.info("bulk %s request of %d failed: %s", template, n, type(exc).__name__)
            values = [None] * n
        failed = sum(v is None for v in values)
        with self._lock:
            self.stats.requests += n
        self.record_usage(template, Usage(calls=n - failed, failures=failed))
        return values

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._flush_hits()
        if self.stats.prompts_cut:  # once per client, i.e. per run, with the run's totals
            log.warning("%d of %d prompts were cut to fit the context window of %s/%s (%d texts shortened or left "
                        "out); set [llm] context_window if the model's is larger", self.stats.prompts_cut,
                        self.stats.requests, self.provider.name, self.provider.model, self.stats.texts_cut)
        if self.claims is not None:
            self.claims.close()
        self.store.close()
        self.ledger.close()
        self.provider.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one request

    def _quick(self, request: LLMRequest) -> LLMResult | None:
        """The result from the cache alone, or None (a miss, or a hit that needs a re-ask)."""
        key = self.cache_key_for(request)
        if not self.provider.cacheable or (self.refresh and key not in self._fresh):
            return None
        hit = self.store.get(key)
        if hit is None:
            return None
        if hit.value is not None or request.parse is None:
            value = hit.value if hit.value is not None else hit.text
        else:
            try:
                value = request.parse(hit.text)
            except Exception:
                return None  # _one re-asks (or records the failure) and counts this hit then
        with self._lock:
            self.stats.requests += 1
        self.record_cache_hit(request.template)
        outcome = _Outcome(hit, cached=True)
        return self._ok(request, value, outcome, [outcome])

    def _one(self, request: LLMRequest) -> LLMResult:
        with self._lock:
            self.stats.requests += 1
        first = self._answer(request)
        if first.error:
            return self._failed(request, first.error, cost=first.cost)
        answer = first.answer
        assert answer is not None
        if answer.value is not None or request.parse is None:
            value = answer.value if answer.value is not None else answer.text
            return self._ok(request, value, first, [first])
        try:
            return self._ok(request, self._parse(request, first), first, [first])
        except ValueError as exc:
            log.debug("malformed answer for %s (%s); re-asking", request.template, exc)
        except Exception:  # a bug in the parser: fail this request, keep the run going
            log.exception("parser of template %s crashed", request.template)
            return self._failed(request, "parser error", first.cost, first)

        reask = replace(request, prompt=f"{request.prompt}\n\n{request.reask_hint or GENERIC_REASK}")
        with self._lock:
            self.stats.reasks += 1
        second = self._answer(reask)
        total_cost = first.cost + second.cost
        if second.error:
            if second.error in (BUDGET, ABORTED):
                return self._failed(request, second.error, total_cost, first)
            return self._failed(request, f"malformed answer; re-ask failed: {second.error}", total_cost, first)
        assert second.answer is not None
        try:
            value = self._parse(request, second)
        except Exception as exc:
            return self._failed(request, f"malformed answer after one re-ask: {_short(str(exc))}",
                                total_cost, second, extra=first)
        return self._ok(request, value, second, [first, second], reasked=True)

    def _parse(self, request: LLMRequest, outcome: _Outcome) -> Any:
        """Parse an answer; a fresh answer's entry then records the parsed value too."""
        assert outcome.answer is not None and request.parse is not None
        value = request.parse(outcome.answer.text)
        if not outcome.cached and outcome.key and self.provider.cacheable and value is not None:
            try:
                self.store.put(outcome.key, replace(outcome.answer, parsed=value))
            except Exception:  # an unpicklable value: the text is stored already, that is enough
                log.debug("parsed value of %s not storable", request.template, exc_info=True)
        return value

    def _ok(self, request: LLMRequest, value: Any, last: _Outcome, outcomes: list[_Outcome],
            reasked: bool = False) -> LLMResult:
        answers = [o.answer for o in outcomes if o.answer is not None]
        assert last.answer is not None
        return LLMResult(
            request=request, ok=True, value=value, text=last.answer.text,
            cached=all(o.cached for o in outcomes),
            input_tokens=sum(a.input_tokens for a in answers), output_tokens=sum(a.output_tokens for a in answers),
            cost=sum(o.cost for o in outcomes), error=None,
            usage_reported=all(a.usage_reported for a in answers), reasked=reasked,
            logprobs=last.answer.logprobs, tokens=last.answer.tokens)

    def _failed(self, request: LLMRequest, error: str, cost: float = 0.0, last: _Outcome | None = None,
                extra: _Outcome | None = None) -> LLMResult:
        answers = [o.answer for o in (extra, last) if o is not None and o.answer is not None]
        if error == BUDGET:
            with self._lock:
                self.stats.budget_skipped += 1
        elif error != ABORTED:
            self.record_usage(request.template, Usage(failures=1))
            log.info("request for %s failed: %s", request.template, error)
        text = answers[-1].text if answers else ""
        return LLMResult(
            request=request, ok=False, value=None, text=text, cached=bool(last and last.cached),
            input_tokens=sum(a.input_tokens for a in answers), output_tokens=sum(a.output_tokens for a in answers),
            cost=cost, error=error, usage_reported=all(a.usage_reported for a in answers))

    # ------------------------------------------------------------------ cache, budget, call
    # cache_key_for, retry_delay, scrub, record_usage and record_cache_hit are public: the batch
    # path (llm.batch) shares this client's cache, retries, secret scrubbing and counters.

    def cache_key_for(self, request: LLMRequest) -> str:
        """The request's key in the answer cache, for this client's provider and model."""
        return cache_key(self.provider.name, self.provider.model, request,
                         include_variables=not self.provider.generative,
                         rule_version=getattr(self.provider, "rule_versions", {}).get(request.task, ""))

    def _lookup(self, key: str, template: str, stale: StoredAnswer | None = None,
                waited: bool = False) -> StoredAnswer | None:
        """A stored answer that may be used; ``waited``: another process may just have stored it.

        With refresh, an answer counts only when this client stored it, or when it was stored by
        the process we waited for (it differs from ``stale``, the entry before the wait).
        """
        if not self.provider.cacheable:
            return None
        if self.refresh and key not in self._fresh and not waited:
            return None
        hit = self.store.get(key)
        if hit is not None and self.refresh and key not in self._fresh:
            if hit == stale:
                return None
            with self._lock:
                self._fresh.add(key)
        if hit is not None:
            self.record_cache_hit(template)
        return hit

    def _answer(self, request: LLMRequest) -> _Outcome:
        key = self.cache_key_for(request)
        hit = self._lookup(key, request.template)
        if hit is not None:
            return _Outcome(hit, cached=True)
        # The same request twice in flight (in this process) is sent once; the second waits.
        with self._lock:
            event = self._inflight.get(key)
            owner = event is None
            if owner:
                event = self._inflight[key] = threading.Event()
        assert event is not None
        if not owner:
            event.wait()
            hit = self._lookup(key, request.template)
            if hit is not None:
                return _Outcome(hit, cached=True)
            return self._claimed(request, key)  # the first one failed: try on our own
        try:
            return self._claimed(request, key)
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def _claimed(self, request: LLMRequest, key: str) -> _Outcome:
        """`_call` under a cross-process claim: a request another process is fetching is waited for."""
        if self.claims is None:
            return self._call(request, key)
        stale = self.store.get(key) if self.refresh and key not in self._fresh else None
        waited = False
        while True:
            if self._stop.is_set():
                return _Outcome(error=ABORTED)
            if self.claims.acquire(key):
                try:
                    # Look again: a holder that released just before we claimed has stored its answer.
                    hit = self._lookup(key, request.template, stale, waited) if waited or not self.refresh else None
                    if hit is not None:
                        return _Outcome(hit, cached=True)
                    return self._call(request, key)
                finally:
                    self.claims.release(key)
            if not waited:
                with self._lock:
                    self.stats.claim_waits += 1
                waited = True
            if not self.claims.wait(key, self._stop):
                return _Outcome(error=ABORTED)
            hit = self._lookup(key, request.template, stale, waited=True)
            if hit is not None:
                return _Outcome(hit, cached=True)
            # Released without an answer (the holder failed) or taken over from a dead holder: claim it.

    def estimate_cost(self, request: LLMRequest) -> float:
        """Upper estimate of one uncached call: prompt tokens + max_tokens of output, at list price."""
        tokens_in, _ = count_prompt_tokens(request.system, request.prompt, self.provider.name, self.provider.model)
        tokens_out = int(request.params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE)
        return self.prices.cost(self.provider.name, self.provider.model, tokens_in, tokens_out)

    def _call(self, request: LLMRequest, key: str) -> _Outcome:
        if self._stop.is_set():
            return _Outcome(error=ABORTED)
        estimate = self.estimate_cost(request) if self.max_cost is not None else 0.0
        with self._lock:
            if self.stats.budget_exhausted:
                return _Outcome(error=BUDGET)
            if self.max_cost is not None and self.stats.cost + self._reserved + estimate > self.max_cost:
                self.stats.budget_exhausted = True
                log.warning("budget: spent $%.4f, next call may cost up to $%.4f, limit $%.4f; sending no more",
                            self.stats.cost + self._reserved, estimate, self.max_cost)
                return _Outcome(error=BUDGET)
            self._reserved += estimate
        try:
            response, elapsed = self._send(request)
        except _Abort:
            return _Outcome(error=ABORTED)
        except ProviderError as exc:
            return _Outcome(error=self.scrub(_short(str(exc))))
        finally:
            with self._lock:
                self._reserved -= estimate
        cached_in, written = int(response.cached_input_tokens or 0), int(response.cache_write_tokens or 0)
        cost = self.prices.cost(self.provider.name, self.provider.model, response.input_tokens, response.output_tokens,
                                cached_input_tokens=cached_in, cache_write_tokens=written)
        answer = StoredAnswer(
            text=response.text or "", value=response.value, input_tokens=int(response.input_tokens),
            output_tokens=int(response.output_tokens), usage_reported=bool(response.usage_reported),
            cost=cost, elapsed=elapsed, model=response.model or self.provider.model,
            logprobs=response.logprobs, tokens=response.tokens, cached_input_tokens=cached_in,
            cache_write_tokens=written)
        # Store first: if the process dies right after, the rerun finds this answer.
        if self.provider.cacheable:
            self.store.put(key, answer)
            with self._lock:
                self._fresh.add(key)
        self.record_usage(request.template, Usage(calls=1, input_tokens=answer.input_tokens,
                                             output_tokens=answer.output_tokens, cost=cost,
                                             estimated_calls=0 if answer.usage_reported else 1))
        return _Outcome(answer, cached=False, cost=cost, key=key)

    def _send(self, request: LLMRequest) -> tuple[LLMResponse, float]:
        """One provider call with retries; returns (response, seconds)."""
        start = time.monotonic()
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Abort
            try:
                response = self.provider.complete(request)
                return response, time.monotonic() - start
            except ProviderError as exc:
                message = self.scrub(_short(str(exc)))
                if exc.fatal:
                    self._abort(message)
                    raise _Abort from None
                if not exc.retryable or attempt >= self.max_retries:
                    if exc.unreachable:
                        where = mask_url(self.provider.base_url) or f"the {self.provider.name} API"
                        self._abort(f"cannot reach {where} after {attempt + 1} tries ({message}); "
                                    "answers received so far are cached, rerun to resume")
                        raise _Abort from None
                    raise ProviderError(message) from None
                delay = exc.retry_after if exc.retry_after is not None else self.retry_delay(attempt)
                delay = max(0.0, min(delay, MAX_RETRY_AFTER))
                with self._lock:
                    self.stats.retries += 1
                log.info("%s; retry %d/%d in %.1fs", message, attempt + 1, self.max_retries, delay)
                if self._stop.wait(delay):
                    raise _Abort from None
                attempt += 1
            except LLMHDError as exc:  # a user-fixable problem (missing model files...): stop with its message
                self._abort(self.scrub(str(exc)))
                raise _Abort from None
            except Exception as exc:  # a provider bug must not take the whole run down
                log.exception("provider %s crashed", self.provider.name)
                raise ProviderError(f"provider error: {type(exc).__name__}: {self.scrub(_short(str(exc)))}") from None

    def retry_delay(self, attempt: int) -> float:
        # Exponential with full jitter in [0.5, 1.5): spreads the retries of concurrent workers.
        return min(self.backoff_cap, self.backoff_base * 2 ** attempt) * (0.5 + random.random())

    def _abort(self, message: str) -> None:
        with self._lock:
            if self._abort_message is None:
                self._abort_message = message
        self._stop.set()

    def scrub(self, text: str) -> str:
        """Never let an API key (or a URL's credentials) into an error message, a log line or the cache."""
        key = self.provider.api_key
        if key and len(key) >= 4 and key in text:
            text = text.replace(key, "***")
        for secret in url_secrets(self.provider.base_url):  # a server may echo them without the URL
            text = text.replace(secret, "***")
        return mask_secrets(text)

    def _malformed_entry(self, key: str, reason: str) -> None:
        with self._lock:
            self.stats.cache_malformed += 1

    def record_usage(self, template: str, usage: Usage) -> None:
        """Count ``usage`` of one template: in the stats, the per-template meter and the ledger."""
        with self._lock:
            self.stats.add(usage)
        self.usage.add(template, usage)
        self.ledger.add(template, self.provider.name, self.provider.model, usage)

    def record_cache_hit(self, template: str) -> None:
        """Count a cache hit now; it reaches the ledger with the others at `_flush_hits`."""
        with self._lock:
            self.stats.cache_hits += 1
            self._pending_hits[template] = self._pending_hits.get(template, 0) + 1
        self.usage.add(template, cache_hits=1)

    def _flush_hits(self) -> None:
        # Cache hits go to the ledger in one write per template (a write per hit would be slow).
        with self._lock:
            pending, self._pending_hits = self._pending_hits, {}
        for template, hits in pending.items():
            self.ledger.add(template, self.provider.name, self.provider.model, cache_hits=hits)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------- helpers


def expected_score(logprobs: list[dict[str, float]] | None, scores: Iterable[int] = range(1, 11),
                   tokens: list[str] | None = None) -> float | None:
    """Expected score over ``scores`` from the first answer token's distribution.

    The first answer token is the first output position whose chosen token (``tokens``) starts
    with a digit, or, without ``tokens``, whose top alternatives include a score. Probabilities
    of the score tokens there are renormalised. A tokenizer that writes "10" as "1" + "0" puts
    the mass of 10 on "1"; when "1" was the chosen token, the next position's probability of
    "0" splits it. Returns None when no position holds a score.
    """
    if not logprobs:
        return None
    wanted = {str(s): s for s in scores}
    position = None
    for i, alternatives in enumerate(logprobs):
        chosen = tokens[i].strip() if tokens and i < len(tokens) else None
        if chosen is not None:
            if chosen[:1].isdigit():
                position = i
                break
        elif any(t.strip() in wanted for t in alternatives):
            position = i
            break
    if position is None:
        return None
    probs: dict[int, float] = {}
    for token, lp in logprobs[position].items():
        score = wanted.get(token.strip())
        if score is not None:
            probs[score] = probs.get(score, 0.0) + math.exp(lp)
    chosen = tokens[position].strip() if tokens and position < len(tokens) else None
    if 10 in wanted.values() and chosen == "1" and position + 1 < len(logprobs) and 1 in probs:
        nxt = logprobs[position + 1]
        p_zero = sum(math.exp(lp) for t, lp in nxt.items() if t.strip() == "0")
        if p_zero > 0:
            probs[10] = probs.get(10, 0.0) + probs[1] * p_zero
            probs[1] *= 1 - p_zero
    total = sum(probs.values())
    if total <= 0:
        return None
    return sum(s * p for s, p in probs.items()) / total


def make_provider(settings: Any) -> Provider:
    """Instantiate the provider named in ``settings`` (an `LLMSettings`)."""
    from llmhd_cli import plugins

    cls = plugins.registry("provider").get(settings.provider, "--provider")
    options = {"timeout": settings.timeout, **settings.options}
    return cls(model=settings.model, base_url=settings.base_url, api_key=settings.api_key, options=options)


def make_client(settings: Any, workspace: Path) -> LLMClient:
    """The client for resolved `llmhd_cli.llm.settings.LLMSettings`; the cache defaults to <workspace>/llm-cache."""
    return LLMClient(make_provider(settings), settings.resolved_cache_dir(workspace),
                     prices=load_prices(settings.prices_file), concurrency=settings.concurrency,
                     max_cost=settings.max_cost, refresh=settings.refresh, max_retries=settings.max_retries)
