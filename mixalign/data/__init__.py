"""Data: read Pile-format shards, tokenize once, sample windows by domain weights."""
