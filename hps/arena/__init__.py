"""The arena's science, database-free: Bradley–Terry ratings with ties and bootstrap intervals
(:mod:`hps.arena.ratings`, :mod:`hps.arena.bradley_terry`), the human promotion gate
(:mod:`hps.arena.gate`) and the leaderboard's chart and text table (:mod:`hps.arena.chart`).

numpy only at import (matplotlib inside the chart functions); no torch, settings or database.
"""
