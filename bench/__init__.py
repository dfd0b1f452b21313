"""InferGate's load benchmark: what the gateway adds to a model call, measured with wrk.

`python -m bench` runs the side-by-side benchmark, `python -m bench soak` the memory soak.
"""
