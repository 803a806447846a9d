"""Harvesting: generator bots' messages in the channels admins enabled become generations,
their requesters' picks become choices.

- :mod:`.cog`: the gateway listeners (messages, reactions, deletions) and the watermark flush;
- :mod:`.adapters`: one module per generator bot's conventions, registered by name;
- :mod:`.harvester`: from a parsed message to stored rows (downloads, image intake, database);
- :mod:`.reactions`: picks made by reacting; :mod:`.channel_adapters`: which adapter a
  channel uses;
- :mod:`.backfill` and :mod:`.watermark`: walking channel histories after a restart or on an
  admin's request, and where such a walk starts."""
