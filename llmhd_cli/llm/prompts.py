"""Prompt templates: editable TOML files, validated at load, rendered into `LLMRequest`s.

A *template set* is a folder of TOML files, one per task (``summarize``, ``score``,
``update_fp``, ``update_fn``, ``item_profile``), plus an optional ``set.toml`` naming the set
and the dataset domains it serves. Built-in sets ship in the ``llmhd_prompts`` package and are
registered through ``register_prompt_templates`` exactly like a plugin's sets; a user folder
given with ``--prompts DIR`` (or the config key ``prompts``) overrides them template by template.

One template file::

    task = "score"                          # one of llmhd_cli.llm.base.TASKS
    description = "..."                     # optional
    system = "You are a professional book editor."
    prompt = '''... {user_profile} ... {item_profile} ...'''   # str.format placeholders
    reask_hint = "..."                      # optional: appended once when an answer does not parse
    [output]                                # the parser
    type = "int"                            # int | text | int_list (task score_list only)
    tag = "s"                               # answer must contain exactly one <s>...</s>
    pattern = '[0-9]{1,2}'                  # the tag's content must match it fully
    range = [1, 10]                         # int only: allowed values
    max_words = 120                         # text only: longer answers are rejected
    json_field = "score"                    # structured answers: {"score": 7}
    [schema]                                # optional JSON schema for structured output
    [params]                                # optional: temperature, max_tokens, ...

The ``score_list`` task (T_score listwise) numbers its ``{item_profiles}`` 1..n and expects an
``int_list`` answer: one line ``<number>: <tag>score</tag>`` per item (or, structured, a JSON
list of ``{"item": n, "score": s}`` under ``json_field``). `OutputSpec.parse_list` reads it
strictly: a line that is not exactly that, a number outside 1..n, a number given twice, or a
score outside the range leaves that item out of the answer (it is *missing*, for the caller to
count and re-ask); an answer with no valid score at all is malformed (the client re-asks it).

Every problem found at load time is one `LLMHDError` line naming the file and the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from llmhd_cli.config import read_toml
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import TASKS as PROVIDER_TASKS
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.tokens import MESSAGE_OVERHEAD as MESSAGE_OVERHEAD_TOKENS
from llmhd_cli.llm.tokens import PromptBudget

GENERIC_SET = "items"  # the set used for a domain no other set serves
# The template kinds: the providers' tasks plus ``score_list``, T_score listwise (one prompt
# scores several items for one user: the llmhd judge's ``--scoring listwise``). Only
# generative providers are sent it; local ones score pairs.
TASKS = tuple(dict.fromkeys((*PROVIDER_TASKS, "score_list")))
SET_FILE = "set.toml"

# Placeholders each task's prompt must use, and those it may use. Anything else is a typo.
REQUIRED_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "summarize": frozenset({"item_profiles"}),
    "score": frozenset({"user_profile", "item_profile"}),
    "update_fp": frozenset({"user_profile", "item_profiles"}),
    "update_fn": frozenset({"user_profile", "item_profiles"}),
    "item_profile": frozenset(),
    "score_list": frozenset({"user_profile", "item_profiles"}),
}
OPTIONAL_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "summarize": frozenset({"n_items"}),
    "score": frozenset(),
    "update_fp": frozenset({"n_items"}),
    "update_fn": frozenset({"n_items"}),
    "item_profile": frozenset({"item_text", "item_id", "attributes"}),
    "score_list": frozenset({"n_items"}),
}
# The output type each task's answers must have (the default: text).
OUTPUT_TYPES = {"score": "int", "score_list": "int_list"}
TOP_KEYS = {"task", "description", "system", "prompt", "reask_hint", "output", "schema", "params"}
OUTPUT_KEYS = {"type", "tag", "pattern", "range", "max_words", "json_field"}
_TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Prompt budgets: placeholders that are never cut (counts and ids), what a cut text ends with,
# the fewest tokens a listed text keeps before texts are left out of the list instead, and the
# room kept for the client's generic re-ask line when a template has no reask_hint.
UNCUT_PLACEHOLDERS = frozenset({"n_items", "item_id"})
CUT_MARK = " [...]"
MIN_LISTED_TOKENS = 32
GENERIC_REASK_TOKENS = 64


def _fail(path: Path | str, key: str, problem: str) -> LLMHDError:
    return LLMHDError(f"{path}: key '{key}': {problem}")


@dataclass(frozen=True)
class OutputSpec:
    """How an answer is parsed: one ``<tag>...</tag>`` whose content matches ``pattern``."""

    type: str  # "int", "text" or "int_list" (score_list: one score per listed item)
    tag: str
    pattern: str | None = None
    range: tuple[int, int] | None = None
    max_words: int | None = None
    json_field: str | None = None

    def parse(self, text: str) -> Any:
        """The answer's value; ValueError for anything malformed (strict: no guessing)."""
        if not isinstance(text, str):
            raise ValueError("answer is not text")
        stripped = text.strip()
        if self.json_field and stripped.startswith("{"):
            content = self._from_json(stripped)
        else:
            content = self._from_tag(text)
        return self._check(content)

    def parse_list(self, text: str, n: int) -> dict[int, int]:
        """An ``int_list`` answer for ``n`` listed items: {item number (1..n): score}.

        Items without exactly one valid line (or JSON entry) are left out: the caller counts
        them as missing. ValueError when not one item has a valid score (a malformed answer).
        """
        if not isinstance(text, str):
            raise ValueError("answer is not text")
        stripped = text.strip()
        if self.json_field and stripped.startswith("{"):
            entries = self._list_from_json(stripped)
        else:
            line = re.compile(rf"\s*(?:item\s*)?#?(\d{{1,4}})\s*[:.)=-]\s*<{re.escape(self.tag)}>(.*?)"
                              rf"</{re.escape(self.tag)}>\s*", re.I)
            entries = []
            for row in text.splitlines():
                match = line.fullmatch(row)
                if match is not None:
                    entries.append((match.group(1), match.group(2).strip()))
        seen: dict[int, int | None] = {}
        for number, content in entries:
            try:
                position = int(number)
                score = self._check(content) if self.type == "int_list" else None
            except ValueError:
                score = None
                position = int(number) if str(number).isdigit() else 0
            if not 1 <= position <= n:
                continue
            # Given twice: neither answer is trusted.
            seen[position] = None if position in seen else score
        scores = {k: v for k, v in seen.items() if v is not None}
        if not scores:
            raise ValueError(f"no valid '<number>: <{self.tag}>score</{self.tag}>' line for any of the {n} items")
        return dict(sorted(scores.items()))

    def _list_from_json(self, text: str) -> list[tuple[str, str]]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON answer ({exc.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get(self.json_field), list):
            raise ValueError(f"JSON answer has no list '{self.json_field}'")
        out = []
        for entry in data[self.json_field]:
            if not isinstance(entry, dict):
                continue
            number, score = entry.get("item"), entry.get("score")
            if isinstance(number, bool) or isinstance(score, bool) or not isinstance(number, int) \
                    or not isinstance(score, (int, str)):
                continue
            out.append((str(number), str(score).strip()))
        return out

    def _from_tag(self, text: str) -> str:
        opens = len(re.findall(rf"<{re.escape(self.tag)}>", text))
        closes = len(re.findall(rf"</{re.escape(self.tag)}>", text))
        if opens == 0:
            raise ValueError(f"no <{self.tag}>...</{self.tag}> in the answer")
        if opens != 1 or closes != 1:
            raise ValueError(f"expected exactly one <{self.tag}>...</{self.tag}>, found {opens} open / {closes} close")
        match = re.search(rf"<{re.escape(self.tag)}>(.*?)</{re.escape(self.tag)}>", text, re.S)
        if match is None:
            raise ValueError(f"<{self.tag}> is not closed after it opens")
        return match.group(1).strip()

    def _from_json(self, text: str) -> str:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON answer ({exc.msg})") from None
        if not isinstance(data, dict) or self.json_field not in data:
            raise ValueError(f"JSON answer has no '{self.json_field}'")
        value = data[self.json_field]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"JSON field '{self.json_field}' is not a {self.type}")
        return str(value).strip()

    def _check(self, content: str) -> Any:
        if self.pattern is not None and re.fullmatch(self.pattern, content, re.S) is None:
            raise ValueError(f"<{self.tag}> content {content[:40]!r} does not match {self.pattern!r}")
        if self.type in ("int", "int_list"):
            try:
                value = int(content)
            except ValueError:
                raise ValueError(f"<{self.tag}> content {content[:40]!r} is not an integer") from None
            lo, hi = self.range or (value, value)
            if not lo <= value <= hi:
                raise ValueError(f"score {value} outside {lo}..{hi}")
            return value
        if not content:
            raise ValueError(f"<{self.tag}> is empty")
        words = len(content.split())
        if self.max_words is not None and words > self.max_words:
            raise ValueError(f"answer has {words} words, more than {self.max_words}")
        return " ".join(content.split())


@dataclass(frozen=True)
class Template:
    """One validated template. ``name`` is ``<set>/<task>``; ``hash`` pins its whole text."""

    name: str
    task: str
    system: str
    prompt: str
    output: OutputSpec
    description: str = ""
    reask_hint: str | None = None
    schema: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it came from
    text: str = ""  # the file's text, for `llmhd prompts show` and export
    # The model's room for one prompt (`TemplateSet.with_budget`): render cuts variable parts to fit.
    budget: PromptBudget | None = field(default=None, compare=False, repr=False)

    @cached_property  # rendered for every request: hash the template once
    def hash(self) -> str:
        payload = {
            "task": self.task, "system": self.system, "prompt": self.prompt, "reask_hint": self.reask_hint,
            "output": self.output.__dict__, "schema": self.schema, "params": self.params,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def placeholders(self) -> set[str]:
        return self._placeholders

    @cached_property
    def _placeholders(self) -> set[str]:
        return _placeholders(self.prompt) | _placeholders(self.system) | _placeholders(self.reask_hint or "")

    def parse(self, text: str) -> Any:
        return self.output.parse(text)

    def parse_list(self, n: int) -> Callable[[str], dict[int, int]]:
        """The parser of a ``score_list`` answer for ``n`` listed items."""
        return functools.partial(self.output.parse_list, n=n)

    def render(self, variables: Mapping[str, Any], *, structured: bool = False,
               budget: PromptBudget | None = None) -> LLMRequest:
        """Fill the placeholders; ``variables`` may carry extra context (user_id, dataset_dir, ...).

        Lists of profiles become numbered lines, attribute dicts ``key: value`` lines. Every
        variable is also kept raw in ``request.variables`` for non-generative providers.
        With a ``budget`` (else the template's own, see `TemplateSet.with_budget`) the variable
        parts are cut until the prompt, its re-ask line and the answer's ``max_tokens`` fit the
        model's context window (`fit_values`); ``request.cut`` counts the texts cut or left out.
        """
        values = {name: _format_value(variables[name]) for name in self.placeholders() if name in variables}
        missing = self.placeholders() - set(values)
        if missing:
            raise ValueError(f"template {self.name}: no value for {', '.join(sorted(missing))}")
        budget = budget or self.budget
        cut = 0
        if budget is not None:
            values, cut = self.fit_values(variables, values, budget)
        system, prompt, hint = self._fill(values)
        parse: Callable[[str], Any] = self.parse
        if self.output.type == "int_list":
            # Items the budget left out of the list are not asked for: parse the ones shown.
            shown = values.get("item_profiles", "")
            parse = self.parse_list(len(shown.split("\n")) if shown else 0)
        return LLMRequest(
            task=self.task,
            template=self.name,
            template_hash=self.hash,
            system=system,
            prompt=prompt,
            variables=dict(variables),
            params=dict(self.params),
            response_schema=self.schema if structured else None,
            parse=parse,
            reask_hint=hint,
            cut=cut,
        )

    def _fill(self, values: Mapping[str, str]) -> tuple[str, str, str | None]:
        return (self.system.format(**values).strip(), self.prompt.format(**values).strip(),
                self.reask_hint.format(**values) if self.reask_hint else None)

    def _size(self, values: Mapping[str, str], budget: PromptBudget) -> int:
        """Tokens of the longest prompt a request can send: the re-ask (prompt + hint)."""
        system, prompt, hint = self._fill(values)
        size = budget.count(system, f"{prompt}\n\n{hint}" if hint else prompt)
        return size if hint else size + GENERIC_REASK_TOKENS

    def fit_values(self, variables: Mapping[str, Any], values: dict[str, str],
                   budget: PromptBudget) -> tuple[dict[str, str], int]:
        """``values`` cut to the budget, and how many texts were cut or left out.

        Only variable parts are cut (texts, and the texts of a list), never the instructions:
        every text longer than a common cap is cut to it (so one huge text cannot crowd out the
        others), the cap chosen as large as fits; when even a cap of `MIN_LISTED_TOKENS` does not
        fit, the list's last texts are left out (``n_items`` then says how many are shown).
        """
        limit = budget.limit(self.params.get("max_tokens"))
        system, prompt, hint = self._fill(values)
        longest = f"{prompt}\n\n{hint or 'x' * 4 * GENERIC_REASK_TOKENS}"
        # Fast path: a byte-level tokenizer (and the estimate) never counts more tokens than bytes.
        if len(system.encode("utf-8")) + len(longest.encode("utf-8")) + 8 <= limit:
            return values, 0
        if self._size(values, budget) <= limit:
            return values, 0
        names = sorted(n for n in values if n not in UNCUT_PLACEHOLDERS and n in variables)
        lists = {n: [" ".join(str(v).split()) for v in variables[n]] for n in names
                 if isinstance(variables[n], (list, tuple))}
        texts = {n: values[n] for n in names if n not in lists}
        bare = dict(values, **{n: "" for n in names})
        floor = self._size(bare, budget)
        if floor > limit:
            raise LLMHDError(
                f"template {self.name}: its instructions alone take about {floor:,} tokens, more than the "
                f"{limit:,} a {budget.context_window:,}-token context window leaves after "
                f"{budget.context_window - limit:,} answer tokens; set [llm] context_window to the model's real window")
        pieces = [(n, None, t) for n, t in texts.items()] + [(n, k, t) for n, items in lists.items()
                                                             for k, t in enumerate(items)]
        counts = [budget.count(t) - MESSAGE_OVERHEAD_TOKENS for _, _, t in pieces]
        mark = budget.count(CUT_MARK) - MESSAGE_OVERHEAD_TOKENS
        keep = {n: len(items) for n, items in lists.items()}
        room = limit - floor
        for _ in range(8):
            # Leave texts out of the lists (from the end) until every text kept can have the minimum.
            while True:
                kept = [c for (n, k, _), c in zip(pieces, counts, strict=True) if k is None or k < keep[n]]
                if sum(min(c, MIN_LISTED_TOKENS + mark) for c in kept) <= room or not any(keep.values()):
                    break
                longest_list = max(keep, key=lambda n: keep[n])
                keep[longest_list] -= 1
            cap = _water_level(kept, room, mark)
            out = dict(values)
            cut = sum(len(items) - keep[n] for n, items in lists.items())
            shortened: dict[tuple[str, int | None], str] = {}
            for (n, k, t), c in zip(pieces, counts, strict=True):
                if k is not None and k >= keep[n]:
                    continue
                if c > cap:
                    shortened[(n, k)] = budget.truncate(t, cap).rstrip() + CUT_MARK
                    cut += 1
            for n in texts:
                out[n] = shortened.get((n, None), texts[n])
            for n, items in lists.items():
                out[n] = _format_value([shortened.get((n, k), t) for k, t in enumerate(items[:keep[n]])])
                if "n_items" in out and out["n_items"] == str(len(items)):
                    out["n_items"] = str(keep[n])
            size = self._size(out, budget)
            if size <= limit:
                return out, cut
            room -= size - limit  # pieces counted apart differ a little from the whole: shrink and retry
        raise LLMHDError(f"template {self.name}: could not cut the prompt to {limit:,} tokens")


def _water_level(counts: list[int], room: int, mark: int) -> int:
    """The largest cap c with sum(min(t, c + mark) for longer texts) <= room (0 if none)."""
    def used(c: int) -> int:
        return sum(t if t <= c else c + mark for t in counts)

    lo, hi = 0, max(counts, default=0)
    if used(hi) <= room:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if used(mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _format_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, (list, tuple)):
        return "\n".join(f"{n}. {' '.join(str(v).split())}" for n, v in enumerate(value, 1))
    return str(value)


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


@dataclass
class TemplateSet:
    """Templates for one domain, keyed by task. ``origin`` says where it came from (for listings)."""

    name: str
    templates: dict[str, Template]
    description: str = ""
    domains: tuple[str, ...] = ()
    path: Path | None = None
    origin: str = "built-in"

    def get(self, task: str) -> Template:
        if task not in self.templates:
            raise LLMHDError(f"prompt set '{self.name}' has no '{task}' template"
                             f" (has: {', '.join(sorted(self.templates)) or 'none'})")
        return self.templates[task]

    def serves(self, domain: str) -> bool:
        return domain == self.name or domain in self.domains

    def with_budget(self, budget: PromptBudget | None) -> TemplateSet:
        """This set with every template rendering to ``budget`` (a model's context window)."""
        return replace(self, templates={t: replace(tpl, budget=budget) for t, tpl in self.templates.items()})

    def for_model(self, provider: Any, model: str, context_window: int | None = None) -> TemplateSet:
        """This set rendering prompts that fit ``model`` (see `model_budget`)."""
        return self.with_budget(model_budget(provider, model, context_window))

    def merged_with(self, override: TemplateSet) -> TemplateSet:
        """This set with the override's templates replacing ours task by task."""
        templates = dict(self.templates)
        templates.update(override.templates)
        return replace(self, templates=templates, path=override.path, origin=override.origin,
                       description=override.description or self.description,
                       domains=tuple(dict.fromkeys(self.domains + override.domains)))

    @classmethod
    def from_dir(cls, path: Path, origin: str = "built-in", name: str | None = None) -> TemplateSet:
        """Load and validate every ``*.toml`` in ``path`` (``set.toml`` holds the set's metadata)."""
        path = Path(path)
        meta: dict[str, Any] = {}
        if (path / SET_FILE).exists():
            meta = read_toml(path / SET_FILE, "prompt set file")
            unknown = set(meta) - {"name", "description", "domains"}
            if unknown:
                raise _fail(path / SET_FILE, sorted(unknown)[0], "unknown key (known: name, description, domains)")
            domains = meta.get("domains", [])
            if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
                raise _fail(path / SET_FILE, "domains", "must be a list of strings")
        set_name = name or str(meta.get("name", path.name))
        templates: dict[str, Template] = {}
        for file in sorted(path.glob("*.toml")):
            if file.name == SET_FILE:
                continue
            template = load_template(file, set_name)
            if template.task in templates:
                raise _fail(file, "task", f"'{template.task}' is already defined by {templates[template.task].source}")
            templates[template.task] = template
        if not templates:
            raise LLMHDError(f"{path}: no template files (*.toml) in prompt set folder")
        return cls(set_name, templates, str(meta.get("description", "")), tuple(meta.get("domains", ())), path, origin)

    def export(self, target: Path, force: bool = False) -> Path:
        """Copy the set's files to ``target/<name>`` for editing."""
        dest = Path(target) / self.name
        if dest.exists() and any(dest.iterdir()) and not force:
            raise LLMHDError(f"{dest}: folder exists and is not empty; pass --force to overwrite")
        dest.mkdir(parents=True, exist_ok=True)
        if self.path is not None and (self.path / SET_FILE).exists():
            shutil.copyfile(self.path / SET_FILE, dest / SET_FILE)
        for task, template in sorted(self.templates.items()):
            (dest / f"{task}.toml").write_text(template.text, encoding="utf-8")
        return dest


def load_template(path: Path, set_name: str) -> Template:
    """Read and validate one template file."""
    path = Path(path)
    data = read_toml(path, "prompt template")
    text = path.read_text(encoding="utf-8")
    for key in sorted(set(data) - TOP_KEYS):
        raise _fail(path, key, f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("task", "system", "prompt", "output"):
        if key not in data:
            raise _fail(path, key, "missing")
    task = data["task"]
    if task not in TASKS:
        raise _fail(path, "task", f"unknown task '{task}' (known: {', '.join(TASKS)})")
    for key in ("system", "prompt", "description", "reask_hint"):
        if key in data and not isinstance(data[key], str):
            raise _fail(path, key, "must be a string")
    allowed = REQUIRED_PLACEHOLDERS[task] | OPTIONAL_PLACEHOLDERS[task]
    for key in ("system", "prompt", "reask_hint"):
        try:
            fields = list(string.Formatter().parse(data.get(key, "")))
        except ValueError as exc:  # a lone { or }
            raise _fail(path, key, f"bad placeholder syntax ({exc}); write literal braces as {{{{ and }}}}") from None
        for _, name, spec, conv in fields:
            if name is None:
                continue
            if name not in allowed:
                raise _fail(path, key, f"unknown placeholder {{{name}}} for task '{task}' "
                                       f"(known: {', '.join(sorted(allowed)) or 'none'})")
            if spec or conv:
                raise _fail(path, key, f"placeholder {{{name}}} may not carry a format spec or conversion")
    missing = REQUIRED_PLACEHOLDERS[task] - _placeholders(data["prompt"])
    if missing:
        raise _fail(path, "prompt", f"missing placeholder {{{sorted(missing)[0]}}} required by task '{task}'")
    if task == "item_profile" and not _placeholders(data["prompt"]) & {"item_text", "attributes"}:
        raise _fail(path, "prompt", "missing placeholder {item_text} or {attributes} required by task 'item_profile'")
    output = _load_output(path, data["output"], task)
    schema = data.get("schema")
    if schema is not None:
        _check_schema(path, schema, output)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise _fail(path, "params", "must be a table")
    return Template(
        name=f"{set_name}/{task}", task=task, system=data["system"], prompt=data["prompt"], output=output,
        description=data.get("description", ""), reask_hint=data.get("reask_hint"), schema=schema,
        params=params, source=str(path), text=text,
    )


def _load_output(path: Path, out: Any, task: str) -> OutputSpec:
    if not isinstance(out, dict):
        raise _fail(path, "output", "must be a table")
    for key in sorted(set(out) - OUTPUT_KEYS):
        raise _fail(path, f"output.{key}", f"unknown key (known: {', '.join(sorted(OUTPUT_KEYS))})")
    for key in ("type", "tag"):
        if key not in out:
            raise _fail(path, f"output.{key}", "missing")
    kind = out["type"]
    if kind not in ("int", "text", "int_list"):
        raise _fail(path, "output.type", f"must be 'int', 'text' or 'int_list', not {kind!r}")
    if kind != OUTPUT_TYPES.get(task, "text"):
        raise _fail(path, "output.type", f"task '{task}' needs output type '{OUTPUT_TYPES.get(task, 'text')}'")
    tag = out["tag"]
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise _fail(path, "output.tag", f"{tag!r} is not a tag name (letters, digits, _ or -)")
    pattern = out.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _fail(path, "output.pattern", "must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(path, "output.pattern", f"bad regex ({exc})") from None
    bounds = None
    if kind in ("int", "int_list"):
        bounds = out.get("range")
        if bounds is None:
            raise _fail(path, "output.range", "missing (an int output needs [low, high])")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            raise _fail(path, "output.range", f"must be [low, high] integers, not {bounds!r}")
        if not bounds[0] < bounds[1]:
            raise _fail(path, "output.range", f"out of range: low {bounds[0]} is not below high {bounds[1]}")
        if task in ("score", "score_list") and (bounds[0] < 1 or bounds[1] > 10):
            raise _fail(path, "output.range", f"out of range: scores are 1..10, not {bounds[0]}..{bounds[1]}")
        bounds = (bounds[0], bounds[1])
    elif "range" in out:
        raise _fail(path, "output.range", "only an int output has a range")
    max_words = out.get("max_words")
    if max_words is not None and (not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 1):
        raise _fail(path, "output.max_words", f"out of range: must be a positive integer, not {max_words!r}")
    json_field = out.get("json_field")
    if json_field is not None and not isinstance(json_field, str):
        raise _fail(path, "output.json_field", "must be a string")
    return OutputSpec(kind, tag, pattern, bounds, max_words, json_field)


def _check_schema(path: Path, schema: Any, output: OutputSpec) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _fail(path, "schema", "must be a table describing a JSON object (type = \"object\")")
    if not output.json_field:
        raise _fail(path, "output.json_field", "missing (a template with a schema names the answer's field)")
    props = schema.get("properties")
    if not isinstance(props, dict) or output.json_field not in props:
        raise _fail(path, f"schema.properties.{output.json_field}", "missing")
    prop = props[output.json_field]
    if output.type == "int" and isinstance(prop, dict) and "enum" in prop:
        enum = prop["enum"]
        lo, hi = output.range or (0, 0)
        if not isinstance(enum, list) or not enum:
            raise _fail(path, f"schema.properties.{output.json_field}.enum", "must be a non-empty list")
        bad = [v for v in enum if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi]
        if bad:
            raise _fail(path, f"schema.properties.{output.json_field}.enum",
                        f"out of range: {bad[0]!r} is outside output.range {lo}..{hi}")


# ---------------------------------------------------------------------------- resolution


def builtin_prompts_dir() -> Path:
    """The folder of the shipped sets (package data of ``llmhd_prompts``)."""
    import llmhd_prompts

    return Path(llmhd_prompts.__file__).parent


def load_prompt_dir(path: Path, origin: str | None = None) -> list[TemplateSet]:
    """A folder holding one set (``*.toml`` directly) or several (one sub-folder each)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise LLMHDError(f"{path}: prompt folder not found (--prompts)")
    origin = origin or str(path)
    if any(p.name != SET_FILE for p in path.glob("*.toml")):
        return [TemplateSet.from_dir(path, origin)]
    sets = [TemplateSet.from_dir(sub, origin) for sub in sorted(path.iterdir())
            if sub.is_dir() and any(sub.glob("*.toml"))]
    if not sets:
        raise LLMHDError(f"{path}: no prompt templates (*.toml) in the folder or its sub-folders (--prompts)")
    return sets


def available_sets(prompts_dir: Path | str | None = None) -> dict[str, TemplateSet]:
    """Registered sets, with the user's folder merged over them (new names are added)."""
    from llmhd_cli import plugins

    reg = plugins.registry("prompt set")
    sets = {name: reg.items[name] for name in reg.names()}
    if prompts_dir:
        for override in load_prompt_dir(Path(prompts_dir)):
            base = sets.get(override.name)
            sets[override.name] = base.merged_with(override) if base else override
    return sets


def template_set_for(domain: str, prompts_dir: Path | str | None = None) -> TemplateSet:
    """The set serving ``domain``: a set of that name, else one listing it, else the generic set.

    Sets from the user's folder (``--prompts``) win over registered ones.
    """
    sets = available_sets(prompts_dir)
    user = {s.name for s in load_prompt_dir(Path(prompts_dir))} if prompts_dir else set()
    groups = [[sets[n] for n in sorted(user)], [sets[n] for n in sorted(sets)]]
    for group in groups:
        for s in group:
            if s.name == domain:
                return s
        for s in group:
            if domain in s.domains:
                return s
    if GENERIC_SET not in sets:
        raise LLMHDError(f"no prompt set serves domain '{domain}' and the generic set '{GENERIC_SET}' is missing")
    return sets[GENERIC_SET]


def prompts_dir_setting(flag: str | None) -> str | None:
    """``--prompts`` if given, else the config key ``prompts`` (top level or under ``[llm]``)."""
    if flag:
        return flag
    from llmhd_cli.config import user_config

    cfg = user_config()
    llm = cfg.get("llm", {}) if isinstance(cfg.get("llm"), dict) else {}
    value = cfg.get("prompts") or llm.get("prompts")
    return str(value) if value else None


def model_budget(provider: Any, model: str, context_window: int | None = None) -> PromptBudget | None:
    """The prompt budget of a provider (name, class or instance) and model.

    ``context_window`` is the user's setting (``[llm] context_window``); without one the
    model's entry in `llmhd_cli.llm.tokens.CONTEXT_WINDOWS`, else its default. None for
    providers that read no prompt text (embed, oracle): their prompts are not cut.
    """
    from llmhd_cli import plugins
    from llmhd_cli.llm.tokens import prompt_budget

    if isinstance(provider, str):
        provider = plugins.registry("provider").get(provider, "--provider")
    return prompt_budget(provider, model, context_window)


def iter_templates(sets: Iterable[TemplateSet]) -> Iterable[Template]:
    for s in sets:
        for task in TASKS:
            if task in s.templates:
                yield s.templates[task]
