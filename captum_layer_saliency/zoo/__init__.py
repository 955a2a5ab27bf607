"""Floor 3: the offline default models (a small classifier per task on all-MiniLM-L6-v2).

* :mod:`.load`: read and verify the shipped artifacts; raises, never trains.
* :mod:`.build`: training and evaluation; imported only by the CLI, benchmarks and tests.
* :mod:`.selection`: the per-model DLS layer selection stored with the artifacts.
"""
