"""Experiments above the engine: the quality benchmark and the demo pipeline.

They generate SynthPedes (`cpcl.synth`), train through `cpcl.engine`, evaluate and render
reports (`cpcl.evaluation`); the CLI modules `cli/bench.py` and `cli/demo.py` only parse
arguments and call them.
"""
