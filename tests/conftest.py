"""Every test runs without the developer's own llmhd settings: no user config, no LLMHD_*
environment variable (workspace, provider, model, cache dir, budget ...) and no provider key or
base URL of the machine (OPENAI_*, ANTHROPIC_*) leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_user_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMHD_CONFIG", str(tmp_path_factory.mktemp("cfg") / "absent.toml"))
        for name in [k for k in os.environ if k.startswith(("LLMHD_", "OPENAI_", "ANTHROPIC_")) and k != "LLMHD_CONFIG"]:
            mp.delenv(name)
        yield
