"""`ecseq demo`: the one-command demo of the whole system (dev broker, training, worker, builder, replay).

Kept out of ``ecseq/``: the core library never imports it.
"""
