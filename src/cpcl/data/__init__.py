"""Datasets: annotation readers for the public benchmarks and a generic JSONL format, one record
model for all of them and image checks."""
