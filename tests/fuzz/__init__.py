"""Fuzzers for every parser of untrusted bytes (`make fuzz`; see docs/fuzzing.md)."""
