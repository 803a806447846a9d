"""Dataset exchange: export the community's choices in the formats people train on
(Pick-a-Pic parquet, HPD v1/v2 JSON + image folders, with a dataset card) and import those
formats back into the database, so a new community can start from public data.

Imports db/, media/ and config/ only: never bot/, worker/, hps/ or torch. pyarrow and
matplotlib are imported inside the functions that need them.
"""
