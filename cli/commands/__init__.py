"""The ``hps`` subcommands, one module per command group (see ``cli.main.GROUPS``). Each module
has ``register(subcommands)`` and imports its heavy dependencies inside the handlers."""
