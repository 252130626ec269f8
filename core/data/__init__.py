"""Preference data: the SQLite store of pairs and its exchange format (JSONL / Parquet)."""
