"""The science of the platform, as a pure library: HPS model architectures, checkpoint loading,
preprocessing, scoring, training and evaluation (and, later, SD generation and adaptation).

Takes plain arguments only: nothing here reads settings, databases or Discord.
"""
