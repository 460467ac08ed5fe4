"""Experiments: a TOML file that names a whole grid of runs, runs it resumably, reports it.

- `spec`: the file's schema (`load_spec`), checked in full before anything runs.
- `grid`: the spec expanded into runs (`expand`), each with a folder named by a hash of its
  resolved config, and the report's cells (method x setting x backbone x objective).
- `runner`: derived datasets, profiles, then the grid on local processes or a Ray cluster,
  skipping finished runs (`run_grid`).
- `report`: the combined table in the paper's layout and the figures (`collect`, `render`,
  `plot`).
- `cost`: the grid's LLM cost before it runs (`grid_cost`).

See docs/experiments.md.
"""

from __future__ import annotations
