"""Every compatibility fix RecBole 1.2.1 needs on current numpy / scipy / torch, in one place.

Call `apply()` before touching RecBole; it is idempotent. Each fix says why it exists.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    import numpy as np
    import scipy.sparse as sp

    # numpy 2 removed these aliases; RecBole's Config.compatibility_settings reads them.
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, alias):
            setattr(np, alias, target)

    # scipy >= 1.13 dropped dok_matrix._update, which NGCF/LightGCN/NCL use to build the graph.
    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):  # dict.update semantics, as the old private method had
            for key, value in data.items():
                self[key] = value
        sp.dok_matrix._update = _update

    # torch.load keeps torch's default weights_only=True: no RecBole load llmhd reaches needs
    # more (llmhd never uses RecBole's Trainer/quick_start checkpoints, which pickle a Config, nor
    # the pretrained-model loads of NeuMF/ConvNCF/NAIS/RaCT/S3Rec), and a process-wide
    # weights_only=False would let any tampered .pt file run code.

    # torch.sparse.FloatTensor (used by RecBole's graph models) warns on every call.
    warnings.filterwarnings("ignore", message=".*torch.sparse.SparseTensor.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")


@contextlib.contextmanager
def isolated_argv() -> Iterator[None]:
    """RecBole's Config parses ``--key=value`` words from sys.argv: hide ours and pytest's."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
