"""Rules that more than one layer applies, kept in one place: a leaf below every package.

``hps/`` (the science), ``media/`` (the intake's stored model inputs) and ``db/`` (the arena's
gate, decided inside a transaction) may not import each other, yet must agree to the bit on a
few rules. Those rules live here, written once:

- :mod:`rules.geometry`: the resize geometries of the model inputs (the paper's pad, CLIP's
  centre crop), pixel for pixel;
- :mod:`rules.win_rate`: a head-to-head win rate and its Wilson score interval;
- :mod:`rules.gate`: the human gate's decision arithmetic and its sentence.

This package imports only the standard library and Pillow (import-linter holds it to that).
"""
