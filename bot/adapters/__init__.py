"""Harvesting adapters: each turns one generator bot's messages into generations and choices.
An adapter is configuration plus a small parser, Discord-object-free (plain fields in)."""
