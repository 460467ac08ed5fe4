"""Prompt templates: the shipped sets, load-time validation, strict parsers, rendering, overrides, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli

from llmhd_cli import plugins
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.prompts import (
    TASKS,
    TemplateSet,
    available_sets,
    builtin_prompts_dir,
    load_prompt_dir,
    load_template,
    template_set_for,
)

DOMAINS = ("books", "businesses", "games", "movies", "items")
ROLES = {"books": "professional book editor", "businesses": "business reviewer", "games": "video game reviewer",
         "movies": "film critic", "items": "recommendation analyst"}


# ------------------------------------------------------------------------------ shipped sets


@pytest.mark.parametrize("name", DOMAINS)
def test_shipped_sets_have_every_task_with_the_papers_structure(name):
    s = available_sets()[name]
    assert set(s.templates) == set(TASKS)
    for t in s.templates.values():
        assert ROLES[name] in t.system and t.name == f"{name}/{t.task}"
    summarize, score = s.get("summarize"), s.get("score")
    assert "<summarization>" in summarize.prompt and "no longer than 100 words" in summarize.prompt
    assert "<s>score</s>" in score.prompt and "1 (disliked it a lot) to 10 (liked it a lot)" in score.prompt
    assert score.output.range == (1, 10) and score.schema["properties"]["score"]["enum"] == list(range(1, 11))
    fp, fn = s.get("update_fp").prompt, s.get("update_fn").prompt
    # Figures 7-8: T_FP lists NOT INTERESTED items, T_FN lists INTERESTED ones.
    assert "NOT INTERESTED" in fp and "NOT INTERESTED" not in fn and "INTERESTED" in fn
    for t in (fp, fn):
        assert "<profile>" in t and "no longer than 100 words" in t


def test_domains_pick_their_set_and_unknown_domains_fall_back_to_generic():
    assert template_set_for("books").name == "books"
    assert template_set_for("movies").name == "movies"
    assert template_set_for("businesses").name == "businesses"
    assert template_set_for("game").name == "games"  # listed in the set's domains
    assert template_set_for("podcasts").name == "items"


def test_books_templates_match_figures_5_and_6_text():
    s = template_set_for("books")
    req = s.get("summarize").render({"item_profiles": ["Fans of romance ...", "Readers who enjoy HOPELESS ..."]})
    assert req.system == "You are a professional book editor."
    assert "Below is the information about books that a reader has read:\n1. Fans of romance ...\n2. Readers" in req.prompt
    assert "please summarize characteristics of books this reader may enjoy" in req.prompt
    score = s.get("score").render({"user_profile": "The reader enjoys ...", "item_profile": "Fans of urban fantasy ..."})
    assert "Below is the reading preference of a reader:\nThe reader enjoys ..." in score.prompt
    assert "You MUST provide the score of the book with the following format. (<s>score</s>, e.g. <s>6</s>)" in score.prompt


# ------------------------------------------------------------------------------ validation


def write_template(tmp_path: Path, edit, source: str = "books/score.toml") -> Path:
    folder = tmp_path / "set"
    folder.mkdir(exist_ok=True)
    path = folder / Path(source).name
    text = (builtin_prompts_dir() / source).read_text(encoding="utf-8")
    path.write_text(edit(text), encoding="utf-8")
    return path


BAD = {
    "unknown placeholder": (lambda t: t.replace("{item_profile}", "{item_profle}"), "prompt", "unknown placeholder {item_profle}"),
    "missing key": (lambda t: t.replace('system = "You are a professional book editor."', ""), "system", "missing"),
    "missing output key": (lambda t: t.replace('tag = "s"', ""), "output.tag", "missing"),
    "bad regex": (lambda t: t.replace("pattern = '[0-9]{1,2}'", "pattern = '[0-9'"), "output.pattern", "bad regex"),
    "out-of-range spec": (lambda t: t.replace("range = [1, 10]", "range = [0, 11]"), "output.range", "out of range"),
    "inverted range": (lambda t: t.replace("range = [1, 10]", "range = [10, 1]"), "output.range", "out of range"),
    "enum out of range": (lambda t: t.replace("enum = [1, 2,", "enum = [0, 2,"), "schema.properties.score.enum", "out of range"),
    "missing placeholder": (lambda t: t.replace("{user_profile}", "the profile"), "prompt", "missing placeholder {user_profile}"),
    "unknown top key": (lambda t: t.replace("task = ", "taks = 1\ntask = "), "taks", "unknown key"),
    "unknown task": (lambda t: t.replace('task = "score"', 'task = "rank"'), "task", "unknown task"),
    "lone brace": (lambda t: t.replace("{item_profile}", "{item_profile} {"), "prompt", "bad placeholder syntax"),
    "format spec": (lambda t: t.replace("{item_profile}", "{item_profile:>10}"), "prompt", "format spec"),
    "text type for score": (lambda t: t.replace('type = "int"', 'type = "text"'), "output.type", "needs output type 'int'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validation_errors_are_one_line_naming_file_and_key(tmp_path, case):
    edit, key, words = BAD[case]
    path = write_template(tmp_path, edit)
    with pytest.raises(LLMHDError) as info:
        load_template(path, "books")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: key '{key}'"), message
    assert words in message


def test_invalid_toml_names_the_file(tmp_path):
    path = write_template(tmp_path, lambda t: t + "\n[output\n")
    with pytest.raises(LLMHDError, match=str(path)) as info:
        TemplateSet.from_dir(path.parent)
    assert "\n" not in str(info.value)


def test_text_template_max_words_must_be_positive(tmp_path):
    path = write_template(tmp_path, lambda t: t.replace("max_words = 120", "max_words = 0"), "books/summarize.toml")
    with pytest.raises(LLMHDError, match=r"key 'output.max_words': out of range"):
        load_template(path, "books")


def test_item_profile_needs_the_item_text(tmp_path):
    path = write_template(tmp_path, lambda t: t.replace("{item_text}", "an item"), "books/item_profile.toml")
    with pytest.raises(LLMHDError, match=r"item_profile.toml: key 'prompt': missing placeholder \{item_text\}"):
        load_template(path, "books")


# ------------------------------------------------------------------------------ parsers


SCORE_OK = {"<s>7</s>": 7, "<s> 10 </s>": 10, "<s>1</s>\n": 1, "Score: <s>6</s>": 6, '{"score": 9}': 9, '{"score": "3"}': 3}
SCORE_BAD = ["7", "<s>11</s>", "<s>0</s>", "<s>seven</s>", "<s>7.5</s>", "<s>7", "7</s>", "<s>7</s><s>8</s>",
             "<s></s>", "<s>-3</s>", '{"score": 11}', '{"score": true}', '{"rating": 7}', '{"score": 7', "",
             "<S>7</S>", "<s>007</s>"]


@pytest.mark.parametrize("text,value", sorted(SCORE_OK.items()))
def test_score_parser_accepts_well_formed(text, value):
    assert template_set_for("books").get("score").parse(text) == value


@pytest.mark.parametrize("text", SCORE_BAD)
def test_score_parser_rejects_malformed(text):
    with pytest.raises(ValueError):
        template_set_for("books").get("score").parse(text)


def test_text_parsers_are_strict():
    summarize = template_set_for("movies").get("summarize")
    assert summarize.parse("<summarization> Likes  sci-fi\nand noir. </summarization>") == "Likes sci-fi and noir."
    for bad in ("Likes sci-fi", "<summarization></summarization>", "<summarization>a</summarization><summarization>b</summarization>",
                "<summarization>" + "word " * 121 + "</summarization>", "<profile>x</profile>"):
        with pytest.raises(ValueError):
            summarize.parse(bad)
    update = template_set_for("movies").get("update_fp")
    assert update.parse("<profile>The viewer likes noir.</profile>") == "The viewer likes noir."
    with pytest.raises(ValueError):
        update.parse("<summarization>The viewer likes noir.</summarization>")


# ------------------------------------------------------------------------------ rendering


def test_render_fills_placeholders_keeps_variables_and_attaches_the_parser():
    t = template_set_for("games").get("update_fn")
    req = t.render({"user_profile": "Likes strategy.", "item_profiles": ["Civ  V", "XCOM\n2"], "n_items": 2,
                    "user_id": "u1", "dataset_dir": "/d"})
    assert req.task == "update_fn" and req.template == "games/update_fn" and req.template_hash == t.hash
    assert "PLAYER PROFILE: Likes strategy." in req.prompt
    assert "INTERESTED GAMES:\n1. Civ V\n2. XCOM 2" in req.prompt
    assert "{" not in req.prompt and req.system == "You are a professional video game reviewer."
    assert req.variables["user_id"] == "u1" and req.variables["item_profiles"] == ["Civ  V", "XCOM\n2"]
    assert req.parse("<profile>ok</profile>") == "ok" and req.reask_hint and req.params["max_tokens"] == 200
    assert req.response_schema is None
    score = template_set_for("games").get("score").render({"user_profile": "a", "item_profile": "b"}, structured=True)
    assert score.response_schema["properties"]["score"]["enum"] == list(range(1, 11))
    with pytest.raises(ValueError, match="no value for item_profile"):
        template_set_for("games").get("score").render({"user_profile": "a"})


def test_hash_changes_with_the_text_only(tmp_path):
    original = template_set_for("books").get("score")
    same = load_template(write_template(tmp_path, lambda t: t.replace("# T_score", "# edited comment")), "books")
    changed = load_template(write_template(tmp_path, lambda t: t.replace("liked it a lot", "loved it")), "books")
    assert same.hash == original.hash and changed.hash != original.hash


# ------------------------------------------------------------------------------ overrides and plugins


def test_user_folder_overrides_template_by_template(tmp_path):
    folder = tmp_path / "mine" / "books"
    folder.mkdir(parents=True)
    text = (builtin_prompts_dir() / "books" / "score.toml").read_text().replace("liked it a lot", "loved it")
    (folder / "score.toml").write_text(text)
    s = template_set_for("books", tmp_path / "mine")
    assert "loved it" in s.get("score").prompt and s.origin == str(tmp_path / "mine")
    assert s.get("summarize").hash == template_set_for("books").get("summarize").hash  # not overridden: built-in
    # A single-set folder works too, and a set listing a domain in set.toml serves it.
    (folder / "set.toml").write_text('name = "mybooks"\ndomains = ["books"]\n')
    assert template_set_for("books", folder).name == "mybooks"
    assert "loved it" in template_set_for("books", folder).get("score").prompt


def test_export_then_reload_is_identical(tmp_path):
    for name in DOMAINS:
        available_sets()[name].export(tmp_path)
    reloaded = {s.name: s for s in load_prompt_dir(tmp_path)}
    for name in DOMAINS:
        for task, t in available_sets()[name].templates.items():
            assert reloaded[name].templates[task].hash == t.hash
    with pytest.raises(LLMHDError, match="not empty; pass --force"):
        available_sets()["books"].export(tmp_path)


class _ExtraSets:
    @hookimpl
    def register_prompt_templates(self, register):
        src = builtin_prompts_dir() / "books"
        register(TemplateSet.from_dir(src, origin="plugin", name="podcasts"))


def test_plugins_add_sets_through_the_same_hook():
    pm = plugins.load_plugins()
    saved = plugins._registries.pop("register_prompt_templates", None)
    plugin = _ExtraSets()
    pm.register(plugin, "test-extra-sets")
    try:
        plugins._registries.pop("register_prompt_templates", None)
        assert "podcasts" in available_sets()
        assert plugins.registry("prompt set").owners["podcasts"] == "test-extra-sets"
        assert plugins.registry("prompt set").owners["books"] == "llmhd_plugins.prompt_sets"
        assert template_set_for("podcasts").name == "podcasts"
    finally:
        pm.unregister(plugin)
        plugins._registries.pop("register_prompt_templates", None)
        if saved is not None:
            plugins._registries["register_prompt_templates"] = saved


# ------------------------------------------------------------------------------ CLI


def test_prompts_cli_list_show_export(tmp_path, capsys):
    code, out, _ = run_cli(capsys, None, "prompts", "list")
    assert code == 0 and all(name in out for name in DOMAINS)
    code, out, _ = run_cli(capsys, None, "prompts", "show", "books/score")
    assert code == 0 and "professional book editor" in out and "books/score" in out
    code, out, _ = run_cli(capsys, None, "prompts", "export", str(tmp_path / "p"), "movies")
    assert code == 0 and (tmp_path / "p" / "movies" / "score.toml").exists()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["movies"]
    code, _, err = run_cli(capsys, None, "prompts", "show", "nope")
    assert code == 2 and "unknown prompt set 'nope'" in err


def test_broken_user_folder_is_one_line_exit_2(tmp_path, capsys):
    shutil.copytree(builtin_prompts_dir() / "movies", tmp_path / "movies")
    bad = tmp_path / "movies" / "score.toml"
    bad.write_text(bad.read_text().replace("{user_profile}", "{user}"))
    code, _, err = run_cli(capsys, None, "prompts", "list", "--prompts", str(tmp_path))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "score.toml" in lines[0] and "key 'prompt'" in lines[0] and "{user}" in lines[0]
