"""Batch APIs for the offline steps (``llmhd summarize --batch``): half price, answers within a day.

A provider that has a batch API declares ``Provider.supports_batch`` and implements
``submit_batch``, ``poll_batch`` and ``fetch_batch`` (and may implement ``find_batch``). This
module runs a step's requests through it, with the same answer cache and ledger as the normal
path (`llmhd_cli.llm.client`):

1. Requests whose answer is cached are answered from the cache, as the normal path does.
2. The others are claimed (`llmhd_cli.llm.claims`): two processes never submit the same prompt.
3. Open jobs of an earlier run (killed, interrupted) that cover them are picked up, not paid again.
4. The rest go in new batches. For each, a *pending marker* is written before the submit
   (``<cache dir>/batches/<job>.pending.json``), and the *job record* (``<job>.json``: batch id,
   provider, model, the requests' custom ids mapped to their cache keys; no key, no URL) is
   written atomically the moment the submit returns the batch id, then the marker removed. A
   marker without a record means a submit was interrupted: the batch may exist and be paid for,
   so its prompts are never submitted again on their own; the provider's ``find_batch`` looks
   for it, else the run stops with one line saying what to check.
5. Batches are polled until they end (``BatchObserver``: requests done of total); every answer is
   stored in the answer cache, then the ledger counts the batch's calls, tokens and cost at the
   batch price (``PriceTable.cost(..., batch=True)``), then the record is marked collected.
6. Answers are parsed as usual; a malformed one is re-asked once as a normal call. Requests the
   batch did not answer (errored, expired, cancelled) are counted as failures, or with
   ``fallback`` sent as normal calls at the list price.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest, LLMResponse, ProviderError
from llmhd_cli.llm.cache import StoredAnswer
from llmhd_cli.llm.usage import Usage

if TYPE_CHECKING:
    from llmhd_cli.llm.client import LLMClient, LLMResult

log = logging.getLogger(__name__)

BATCH_DIR = "batches"  # in the cache dir
RECORD_VERSION = 1
JOB_CLAIM = "batch-job:"  # claim on a whole job: one process polls and collects it
POLL_MIN = 1.0  # seconds between polls at first, growing to the poll_max
POLL_MAX = 60.0
POLL_ENV = "LLMHD_BATCH_POLL"  # the longest wait between two polls, in seconds
MAX_RETRY_AFTER = 120.0  # seconds; the longest wait a refused submit honours
MAX_ROUNDS = 5  # rounds of "claim, submit, wait for the others" before the leftovers go the normal way


@dataclass
class BatchStatus:
    """What ``Provider.poll_batch`` says about a batch."""

    ended: bool  # no request will change any more (completed, expired, cancelled, failed)
    total: int
    done: int  # requests that finished, answered or not
    failed: int
    state: str  # the provider's own word ("in_progress", "ended", ...)
    error: str | None = None  # set when the whole batch failed (nothing to fetch): why


@dataclass
class BatchOutcome:
    """One request's result in ``Provider.fetch_batch``: a response, or why there is none."""

    response: LLMResponse | None = None
    error: str | None = None


class SubmitUncertain(ProviderError):
    """A submit that may have created a batch although it failed (a timeout, a 5xx): its pending
    marker is kept, so its prompts are not submitted (and paid for) a second time."""


@dataclass
class BatchPoll:
    """The progress of the batches a run waits for, summed."""

    label: str
    batches: int
    total: int
    done: int
    failed: int
    state: str


class BatchObserver(Protocol):
    """What the CLI shows while batches run."""

    def batch_start(self, label: str, total: int) -> None: ...

    def batch_poll(self, poll: BatchPoll) -> None: ...


@dataclass
class BatchRunStats:
    """What `run_batched` did with batches (the client's `RunStats` counts calls, tokens, cost)."""

    submitted: int = 0  # batches this run submitted
    resumed: int = 0  # batches of an earlier run this run picked up
    requests: int = 0  # requests in the batches this run submitted
    answered: int = 0  # answers collected from batches
    failed: int = 0  # batch requests that came back without an answer
    fallback: int = 0  # of those, sent as normal calls
    waited: int = 0  # prompts another process was fetching: waited for, not sent
    batch_ids: list[str] = field(default_factory=list)


@dataclass
class JobRecord:
    """One submitted batch: ``<cache dir>/batches/<job>.json`` (``.pending.json`` before the submit)."""

    job: str
    provider: str
    model: str
    endpoint: str  # sha256 of the base URL, "" for the provider's own API (the URL itself may hold secrets)
    template: str
    requests: dict[str, str]  # custom id -> cache key
    created: float
    host: str
    pid: int
    batch_id: str | None = None
    state: str = "pending"  # pending, submitted, collected
    submitted: float | None = None
    collected: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @classmethod
    def from_dict(cls, data: object) -> JobRecord:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        kept = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        record = cls(**kept)
        strings = (record.job, record.provider, record.model, record.endpoint, record.template, record.host)
        if not all(isinstance(v, str) for v in strings) or not isinstance(record.requests, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in record.requests.items()):
            raise ValueError("fields of the wrong type")
        if record.state not in ("pending", "submitted", "collected") or (
                record.state != "pending" and not isinstance(record.batch_id, str)):
            raise ValueError(f"state {record.state!r} without a batch id")
        numbers = (record.created, record.submitted or 0.0, record.collected or 0.0)
        if not all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in numbers) or type(record.pid) is not int:
            raise ValueError("times or pid that are not numbers")
        if not isinstance(record.counts, dict):
            raise ValueError("counts that are not an object")
        return record


def endpoint_id(base_url: str | None) -> str:
    """Which server a job went to, without its URL (which may carry credentials)."""
    return hashlib.sha256(base_url.encode()).hexdigest() if base_url else ""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: dict) -> None:
    """Write JSON so that a reader (or a crash) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class JobStore:
    """The job records and pending markers of one cache dir."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / BATCH_DIR
        self._warned: set[Path] = set()  # files that are not records: one warning each

    def record_path(self, job: str) -> Path:
        return self.dir / f"{job}.json"

    def pending_path(self, job: str) -> Path:
        return self.dir / f"{job}.pending.json"

    def write_pending(self, record: JobRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.pending_path(record.job), asdict(record))

    def write_submitted(self, record: JobRecord) -> None:
        """The record, the moment the submit returned its batch id; then the marker goes."""
        _write_atomic(self.record_path(record.job), asdict(record))
        self.pending_path(record.job).unlink(missing_ok=True)

    def update(self, record: JobRecord) -> None:
        _write_atomic(self.record_path(record.job), asdict(record))

    def drop_pending(self, job: str) -> None:
        self.pending_path(job).unlink(missing_ok=True)

    def read(self, path: Path) -> JobRecord | None:
        try:
            return JobRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("batch job file %s is not a job record (%s); ignored", path, exc)
            return None

    def _all(self, pending: bool) -> list[JobRecord]:
        if not self.dir.is_dir():
            return []
        paths = [p for p in sorted(self.dir.glob("*.json"))
                 if not p.name.startswith(".") and p.name.endswith(".pending.json") == pending]
        return [r for r in map(self.read, paths) if r is not None]

    def open_jobs(self, provider: str, model: str, endpoint: str) -> list[JobRecord]:
        """Submitted, not yet collected jobs for this provider, model and server."""
        return [r for r in self._all(pending=False) if r.state == "submitted"
                and (r.provider, r.model, r.endpoint) == (provider, model, endpoint)]

    def pending(self, provider: str, model: str, endpoint: str) -> list[JobRecord]:
        """Markers of submits with no record after them, for this provider, model and server."""
        return [r for r in self._all(pending=True) if not self.record_path(r.job).exists()
                and (r.provider, r.model, r.endpoint) == (provider, model, endpoint)]


def _alive_here(record: JobRecord) -> bool:
    from llmhd_cli.llm.claims import _alive

    return record.host == socket.gethostname() and record.pid != os.getpid() and _alive(record.pid)


def _poll_max() -> float:
    value = os.environ.get(POLL_ENV)
    if not value:
        return POLL_MAX
    try:
        seconds = float(value)
    except ValueError:
        raise LLMHDError(f"{POLL_ENV}: must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise LLMHDError(f"{POLL_ENV}: must be a positive number of seconds, got {value!r}")
    return seconds


def batch_providers() -> list[str]:
    """Names of the registered providers that have a batch API."""
    from llmhd_cli import plugins

    return sorted(n for n, cls in plugins.registry("provider").items.items() if getattr(cls, "supports_batch", False))


def require_batch(provider: object) -> None:
    """A one-line error for ``--batch`` with a provider that has no batch API."""
    if not getattr(provider, "supports_batch", False):
        others = ", ".join(batch_providers()) or "none is loaded"
        raise LLMHDError(f"--batch: provider '{getattr(provider, 'name', provider)}' has no batch API "
                         f"(providers with one: {others}); run without --batch")


def refuse_open_batches(client: LLMClient, requests: list[LLMRequest]) -> None:
    """For a run without ``--batch``: one line, before anything is sent, when some of its uncached
    prompts are in a batch still open (submitted, or its submit interrupted), which a normal call
    would pay for a second time."""
    provider = client.provider
    jobs = JobStore(client.cache_dir)
    if not getattr(provider, "supports_batch", False) or not jobs.dir.is_dir():
        return
    endpoint = endpoint_id(provider.base_url)
    records = jobs.open_jobs(provider.name, provider.model, endpoint) + jobs.pending(provider.name, provider.model,
                                                                                     endpoint)
    if not records:
        return
    keys = {client.cache_key_for(r) for r in requests}
    keys = {k for k in keys if client.refresh or client.store.get(k) is None}
    for record in records:
        n = len(keys & set(record.requests.values()))
        if not n:
            continue
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.submitted or record.created))
        what = f"batch {record.batch_id}" if record.batch_id else "a batch whose submit was interrupted"
        path = jobs.record_path(record.job) if record.batch_id else jobs.pending_path(record.job)
        raise LLMHDError(f"{n:,} of these prompts are in {what} ({provider.name}/{provider.model}, {when}), still "
                         f"open: rerun with --batch to collect it (nothing is paid twice), or delete {path} to send "
                         "them one by one at the list price")


class _Runner:
    """One `run_batched` call."""

    def __init__(self, client: LLMClient, label: str, observer: BatchObserver | None, fallback: bool,
                 poll_min: float, poll_max: float, stats: BatchRunStats) -> None:
        self.client = client
        self.provider = client.provider
        self.label = label
        self.observer = observer
        self.fallback = fallback
        self.poll_min = min(poll_min, poll_max)  # a short poll_max (tests, LLMHD_BATCH_POLL) wins
        self.poll_max = poll_max
        self.stats = stats
        self.jobs = JobStore(client.cache_dir)
        self.endpoint = endpoint_id(self.provider.base_url)
        self.answers: dict[str, tuple[StoredAnswer, float]] = {}  # key -> (answer, cost) collected now
        self.errors: dict[str, str] = {}  # key -> why its batch request has no answer
        self.requests: dict[str, LLMRequest] = {}  # key -> the request (first of equal ones)
        self.held: set[str] = set()  # claims this run holds

    # ------------------------------------------------------------------ claims

    def _claim(self, key: str) -> bool:
        claims = self.client.claims
        if claims is None or claims.acquire(key):
            self.held.add(key)
            return True
        return False

    def _release_all(self) -> None:
        claims = self.client.claims
        if claims is not None:
            for key in self.held:
                claims.release(key)
        self.held.clear()

    # ------------------------------------------------------------------ submit, poll, collect

    def _check_pending(self, keys: set[str], all_keys: set[str]) -> list[JobRecord]:
        """Interrupted submits covering ``keys``: resolved through ``find_batch`` (then open jobs),
        left to their live owner, or a one-line error."""
        resolved = []
        for marker in self.jobs.pending(self.provider.name, self.provider.model, self.endpoint):
            covered = set(marker.requests.values()) & all_keys
            if not covered or _alive_here(marker):
                continue  # another dataset's, or its process is submitting right now
            if not self._claim(JOB_CLAIM + marker.job):
                continue
            try:
                batch_id = self.provider.find_batch(marker.job, marker.created)
            except ProviderError as exc:
                log.info("looking for the batch of job %s failed: %s", marker.job, exc)
                batch_id = None
            if batch_id:
                log.warning("batch: the submit of job %s was interrupted before its record was written; found its "
                            "batch %s at %s, picking it up", marker.job, batch_id, self.provider.name)
                marker.batch_id, marker.state, marker.submitted = batch_id, "submitted", marker.created
                self.jobs.write_submitted(marker)
                resolved.append(marker)
                continue
            if covered & keys:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(marker.created))
                raise LLMHDError(
                    f"--batch: a submit of {len(marker.requests):,} requests to {self.provider.name}/"
                    f"{self.provider.model} ({when}) was interrupted before its batch id was recorded, so that batch "
                    f"may exist and be paid for; check your {self.provider.name} batches, then delete "
                    f"{self.jobs.pending_path(marker.job)} to submit those prompts again (or collect them yourself)")
        return resolved

    def _submit(self, keys: list[str]) -> JobRecord | None:
        template = self.requests[keys[0]].template
        record = JobRecord(
            job=uuid.uuid4().hex[:16], provider=self.provider.name, model=self.provider.model,
            endpoint=self.endpoint, template=template, requests={f"r{i}": k for i, k in enumerate(keys)},
            created=time.time(), host=socket.gethostname(), pid=os.getpid())
        self._claim(JOB_CLAIM + record.job)
        self.jobs.write_pending(record)
        try:
            batch_id = self._submit_with_retries(record)
        except SubmitUncertain as exc:
            message = self.client.scrub(str(exc))
            raise LLMHDError(f"--batch: submitting {len(keys):,} requests to {self.provider.name} failed ({message}) "
                             f"in a way that may have created the batch; rerun to look for it "
                             f"({self.jobs.pending_path(record.job)} keeps it from being paid twice)") from None
        except ProviderError as exc:  # refused: nothing was created
            self.jobs.drop_pending(record.job)
            message = self.client.scrub(str(exc))
            if exc.fatal or exc.unreachable:
                raise LLMHDError(f"--batch: {message}") from None
            log.warning("batch: submitting %d requests failed: %s", len(keys), message)
            for key in keys:
                self.errors[key] = f"batch submit failed: {message}"
            return None
        except Exception as exc:  # a provider bug: the batch may exist, so the marker stays (Ctrl-C: the same)
            log.exception("provider %s crashed submitting a batch", self.provider.name)
            raise LLMHDError(f"--batch: provider '{self.provider.name}' crashed submitting {len(keys):,} requests "
                             f"({type(exc).__name__}); the batch may exist: check your {self.provider.name} batches, "
                             f"then delete {self.jobs.pending_path(record.job)} to submit them again") from None
        record.batch_id, record.state, record.submitted = str(batch_id), "submitted", time.time()
        self.jobs.write_submitted(record)
        self.stats.submitted += 1
        self.stats.requests += len(keys)
        self.stats.batch_ids.append(record.batch_id)
        log.info("batch %s: %d %s requests submitted to %s/%s", record.batch_id, len(keys), template,
                 self.provider.name, self.provider.model)
        return record

    def _submit_with_retries(self, record: JobRecord) -> str:
        """``submit_batch``, again after a refusal that says to wait (429, 409), as the client retries calls."""
        requests = {cid: self.requests[k] for cid, k in record.requests.items()}
        attempt = 0
        while True:
            try:
                return self.provider.submit_batch(requests, record.job)
            except SubmitUncertain:
                raise
            except ProviderError as exc:
                if not exc.retryable or attempt >= self.client.max_retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.client.retry_delay(attempt)
                delay = max(0.0, min(delay, MAX_RETRY_AFTER))
                log.info("batch: submit refused (%s); retry %d/%d in %.1fs", self.client.scrub(str(exc)),
                         attempt + 1, self.client.max_retries, delay)
                self.client.stats.retries += 1
                time.sleep(delay)
                attempt += 1

    def _poll(self, record: JobRecord, failures: dict[str, int]) -> BatchStatus | None:
        assert record.batch_id is not None
        try:
            status = self.provider.poll_batch(record.batch_id)
        except ProviderError as exc:
            message = self.client.scrub(str(exc))
            if exc.fatal:
                raise LLMHDError(f"--batch: batch {record.batch_id}: {message}; the batch keeps running, "
                                 "rerun to pick it up") from None
            failures[record.job] = failures.get(record.job, 0) + 1
            if failures[record.job] > self.client.max_retries:
                raise LLMHDError(f"--batch: cannot poll batch {record.batch_id} after {failures[record.job]} tries "
                                 f"({message}); the batch keeps running, rerun to pick it up") from None
            log.info("batch %s: poll failed (%s); trying again", record.batch_id, message)
            return None
        failures.pop(record.job, None)
        return status

    def _wait(self, records: list[JobRecord]) -> None:
        """Poll until every batch ended, collecting each as it ends."""
        if not records:
            return
        total = sum(len(r.requests) for r in records)
        if self.observer is not None:
            self.observer.batch_start(self.label, total)
        active = list(records)
        last: dict[str, BatchStatus] = {}
        failures: dict[str, int] = {}
        delay = self.poll_min
        try:
            while active:
                for record in list(active):
                    status = self._poll(record, failures)
                    if status is None:
                        continue
                    last[record.job] = status
                    if status.ended:
                        self._collect(record, status)
                        active.remove(record)
                if self.observer is not None:
                    done = sum(len(r.requests) if r not in active else min(last[r.job].done, len(r.requests))
                               for r in records if r not in active or r.job in last)
                    failed = sum(s.failed for s in last.values())
                    states = sorted({s.state for s in last.values()}) or ["submitted"]
                    self.observer.batch_poll(BatchPoll(self.label, len(records), total, done, failed,
                                                       ", ".join(states)))
                if active:
                    time.sleep(delay)
                    delay = min(self.poll_max, delay * 1.5)
        except KeyboardInterrupt:
            ids = ", ".join(str(r.batch_id) for r in active)
            log.warning("batch: interrupted; batch %s keeps running at %s: rerun the same command to pick it up "
                        "(nothing is paid twice)", ids, self.provider.name)
            raise

    def _collect(self, record: JobRecord, status: BatchStatus) -> None:
        """Every answer into the cache, then the ledger at the batch price, then the record: collected."""
        assert record.batch_id is not None
        client, name, model = self.client, self.provider.name, self.provider.model
        if status.error is not None:
            outcomes: dict[str, BatchOutcome] = {}
            whole = f"batch {record.batch_id} failed: {client.scrub(status.error)}"
        else:
            placeholder = LLMRequest(task="", template=record.template, template_hash="", system="", prompt="")
            known = {cid: self.requests.get(key, placeholder) for cid, key in record.requests.items()}
            try:
                outcomes = self.provider.fetch_batch(record.batch_id, known)
            except ProviderError as exc:
                raise LLMHDError(f"--batch: fetching the results of batch {record.batch_id} failed "
                                 f"({client.scrub(str(exc))}); rerun to fetch them again (nothing is paid twice)") from None
            whole = "no result for this request in the batch"
        calls = tokens_in = tokens_out = estimated = 0
        cost = 0.0
        for cid, key in record.requests.items():
            outcome = outcomes.get(cid)
            response = outcome.response if outcome is not None else None
            if response is None:
                error = outcome.error if outcome is not None and outcome.error else whole
                self.errors[key] = client.scrub(error)
                continue
            cached_in, written = int(response.cached_input_tokens or 0), int(response.cache_write_tokens or 0)
            price = client.prices.cost(name, model, response.input_tokens, response.output_tokens, batch=True,
                                       cached_input_tokens=cached_in, cache_write_tokens=written)
            answer = StoredAnswer(
                text=response.text or "", value=response.value, input_tokens=int(response.input_tokens),
                output_tokens=int(response.output_tokens), usage_reported=bool(response.usage_reported),
                cost=price, elapsed=time.time() - (record.submitted or record.created),
                model=response.model or model, logprobs=response.logprobs, tokens=response.tokens,
                cached_input_tokens=cached_in, cache_write_tokens=written)
            if self.provider.cacheable:
                client.store.put(key, answer)
            self.answers[key] = (answer, price)
            self.errors.pop(key, None)
            calls += 1
            tokens_in += answer.input_tokens
            tokens_out += answer.output_tokens
            cost += price
            estimated += 0 if answer.usage_reported else 1
        # Stats, per-template usage and ledger, as the normal path counts a paid call (at the batch price).
        client.record_usage(record.template, Usage(calls=calls, input_tokens=tokens_in, output_tokens=tokens_out,
                                              cost=cost, estimated_calls=estimated))
        record.state, record.collected = "collected", time.time()
        record.counts = {"answered": calls, "failed": len(record.requests) - calls}
        self.jobs.update(record)
        self.stats.answered += calls
        self.stats.failed += len(record.requests) - calls
        log.info("batch %s (%s): %d answered, %d without an answer, $%.4f", record.batch_id, status.state, calls,
                 len(record.requests) - calls, cost)

    def _chunks(self, keys: list[str]) -> list[list[str]]:
        """``keys`` in batches of at most ``batch_max_requests`` requests and ``batch_max_bytes`` of prompts."""
        most = max(1, int(self.provider.batch_max_requests))
        most_bytes = max(1, int(self.provider.batch_max_bytes))
        chunks: list[list[str]] = []
        size = 0
        for key in keys:
            request = self.requests[key]
            n = len(request.system.encode()) + len(request.prompt.encode())
            if not chunks or len(chunks[-1]) >= most or (chunks[-1] and size + n > most_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(key)
            size += n
        return chunks

    def _budget(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """The keys that fit ``max_cost`` at the batch price, and the ones that do not."""
        client = self.client
        if client.max_cost is None:
            return keys, []
        from llmhd_cli.llm.client import DEFAULT_MAX_TOKENS_ESTIMATE
        from llmhd_cli.llm.tokens import count_prompt_tokens

        spent = client.stats.cost
        for n, key in enumerate(keys):
            request = self.requests[key]
            tokens_in, _ = count_prompt_tokens(request.system, request.prompt, self.provider.name, self.provider.model)
            tokens_out = int(request.params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE)
            spent += client.prices.cost(self.provider.name, self.provider.model, tokens_in, tokens_out, batch=True)
            if spent > client.max_cost:
                client.stats.budget_exhausted = True
                log.warning("budget: %d of %d requests fit --max-cost $%.4f at the batch price; submitting those",
                            n, len(keys), client.max_cost)
                return keys[:n], keys[n:]
        return keys, []

    # ------------------------------------------------------------------ the run

    def fetch(self, misses: list[str], all_keys: set[str]) -> set[str]:
        """Get answers for the ``misses`` through batches; returns the keys left over the budget."""
        claims = self.client.claims
        todo = list(misses)
        attempted: set[str] = set()
        over_budget: set[str] = set()
        resumed = self._check_pending(set(todo), all_keys)
        for round_ in range(MAX_ROUNDS):
            if not todo and round_:  # round 0 always looks for open jobs: one killed after storing its
                break                # answers but before the ledger is picked up, and counted, then
            mine = [k for k in todo if self._claim(k)]
            others = [k for k in todo if k not in self.held]
            mine_set = set(mine)
            active: list[JobRecord] = []
            blocked: list[JobRecord] = []  # open jobs another live process polls
            for record in resumed + self.jobs.open_jobs(self.provider.name, self.provider.model, self.endpoint):
                keys = set(record.requests.values())
                if not keys & all_keys or any(r.job == record.job for r in active + blocked):
                    continue
                if not self._claim(JOB_CLAIM + record.job):
                    blocked.append(record)
                    continue
                fresh = self.jobs.read(self.jobs.record_path(record.job))
                if fresh is None or fresh.state != "submitted":
                    continue  # collected meanwhile: its answers are in the cache
                active.append(fresh)
                self.stats.resumed += 1
                log.info("batch %s: picked up (submitted %s, %d requests)", fresh.batch_id,
                         time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(fresh.submitted or fresh.created)),
                         len(fresh.requests))
            resumed = []
            covered = {k for r in active + blocked for k in r.requests.values()}
            in_blocked = {k for r in blocked for k in r.requests.values()}
            new = [k for k in mine if k not in covered and k not in attempted and k not in over_budget]
            new, over = self._budget(new)
            over_budget.update(over)
            for chunk in self._chunks(new):
                submitted = self._submit(chunk)
                if submitted is not None:
                    active.append(submitted)
            attempted.update(new)
            self._wait(active)
            self._release_all()
            # Prompts another process is fetching: wait for it, then read them from the cache.
            others += [k for k in mine if k in in_blocked]
            if others and claims is not None:
                self.stats.waited += len(others)
                log.info("batch: %d prompts are being fetched by another process; waiting for it", len(others))
                for record in blocked:
                    claims.wait(JOB_CLAIM + record.job)
                for key in others:
                    claims.wait(key)
            todo = [k for k in others if k not in self.answers and self.client.store.get(k) is None]
            todo += [k for k in mine_set - set(others) if k not in self.answers and k not in self.errors
                     and k not in over_budget and k not in attempted and self.client.store.get(k) is None]
        return over_budget


def run_batched(client: LLMClient, requests: list[LLMRequest], *, label: str = "batch",
                observer: BatchObserver | None = None, on_result: Callable[[LLMResult], None] | None = None,
                fallback: bool = False, poll_min: float = POLL_MIN, poll_max: float | None = None,
                stats: BatchRunStats | None = None) -> list[LLMResult]:
    """Answer ``requests`` (in order) like `LLMClient.run`, the uncached ones through the provider's
    batch API at its batch price; see the module docstring. ``stats`` (if given) gets the batch counts."""
    from llmhd_cli.llm.client import BUDGET, GENERIC_REASK, LLMResult

    if client.closed:
        raise RuntimeError("LLMClient is closed")
    require_batch(client.provider)
    stats = stats if stats is not None else BatchRunStats()
    runner = _Runner(client, label, observer, fallback, poll_min, poll_max if poll_max is not None else _poll_max(),
                     stats)
    keys = [client.cache_key_for(r) for r in requests]  # the normal path's cache keys, so both share one cache
    for key, request in zip(keys, requests, strict=True):
        runner.requests.setdefault(key, request)
    cut = [r.cut for r in requests if r.cut]
    if cut:
        client.stats.prompts_cut += len(cut)
        client.stats.texts_cut += sum(cut)
    misses = [k for k in runner.requests if client.refresh or client.store.get(k) is None]
    try:
        over_budget = runner.fetch(misses, set(runner.requests))
    finally:
        runner._release_all()

    results: list[LLMResult | None] = [None] * len(requests)
    normal: list[int] = []  # answered by the normal path: cached, waited for, or fallback
    reask: list[int] = []
    seen: set[str] = set()
    for i, (key, request) in enumerate(zip(keys, requests, strict=True)):
        if key in runner.answers:
            answer, price = runner.answers[key]
            first = key not in seen
            seen.add(key)
            client.stats.requests += 1
            if not first:  # the same prompt twice: the second is a cache hit, as in the normal path
                client.record_cache_hit(request.template)
            try:
                value = answer.value if answer.value is not None or request.parse is None else request.parse(answer.text)
            except ValueError:
                reask.append(i)
                continue
            except Exception:
                log.exception("parser of template %s crashed", request.template)
                results[i] = _failed(request, "parser error", answer, price if first else 0.0)
                client.record_usage(request.template, Usage(failures=1))
                continue
            results[i] = LLMResult(
                request=request, ok=True, value=value, text=answer.text, cached=not first,
                input_tokens=answer.input_tokens, output_tokens=answer.output_tokens, cost=price if first else 0.0,
                error=None, usage_reported=answer.usage_reported, logprobs=answer.logprobs, tokens=answer.tokens)
        elif key in over_budget:
            client.stats.requests += 1
            client.stats.budget_skipped += 1
            results[i] = _failed(request, BUDGET)
        elif key in runner.errors and not fallback:
            client.stats.requests += 1
            client.record_usage(request.template, Usage(failures=1))
            results[i] = _failed(request, runner.errors[key])
        else:
            if key in runner.errors:
                stats.fallback += 1
            normal.append(i)
    for i, result in enumerate(results):
        if result is not None and on_result is not None and i not in reask:
            on_result(result)
    if runner.errors and not fallback:
        first_error = next(iter(runner.errors.values()))
        log.warning("batch: %d requests came back without an answer (first: %s); rerun with --batch to submit them "
                    "again", len(runner.errors), first_error)
    # Malformed batch answers are re-asked once, as normal calls (another batch round would take a day).
    if reask:
        client.stats.reasks += len(reask)
        followups = [replace(requests[i], prompt=f"{requests[i].prompt}\n\n{requests[i].reask_hint or GENERIC_REASK}",
                             parse=None) for i in reask]
        for i, second in zip(reask, client.run(followups), strict=True):
            request = requests[i]
            answer, price = runner.answers[keys[i]]
            tokens = (answer.input_tokens + second.input_tokens, answer.output_tokens + second.output_tokens)
            value = None
            error = None
            if not second.ok:  # the client counted this failure already
                error = second.error if second.error == BUDGET else f"malformed answer; re-ask failed: {second.error}"
            else:
                try:
                    value = request.parse(second.text) if request.parse is not None else second.text
                except Exception as exc:
                    error = f"malformed answer after one re-ask: {' '.join(str(exc).split())[:200]}"
                    client.record_usage(request.template, Usage(failures=1))
            result = LLMResult(request=request, ok=error is None, value=value, text=second.text, cached=False,
                               input_tokens=tokens[0], output_tokens=tokens[1], cost=price + second.cost,
                               error=error, reasked=error is None)
            results[i] = result
            if on_result is not None:
                on_result(result)
    if normal:
        for i, result in zip(normal, client.run([requests[i] for i in normal], on_result=on_result), strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _failed(request: LLMRequest, error: str, answer: StoredAnswer | None = None, cost: float = 0.0) -> LLMResult:
    from llmhd_cli.llm.client import LLMResult

    return LLMResult(request=request, ok=False, value=None, text=answer.text if answer else "", cached=False,
                     input_tokens=answer.input_tokens if answer else 0,
                     output_tokens=answer.output_tokens if answer else 0, cost=cost, error=error)
