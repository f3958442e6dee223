"""Session traces and their replay (docs/trace.md).

A trace records one session — its input bytes, config and updates, what its engines produced
and where in the stream, every outgoing event — so ``asrhub replay FILE`` can run the same
pipeline again, without the user's machine or the engine, and print the same events.
Traces carry audio: nothing is recorded unless the operator sets a store (``[trace]``).
"""
