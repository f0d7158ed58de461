"""`ecseq demo`: the one-command demo of the whole system (Apache Kafka, training, worker, builder, replay).

Kept out of ``ecseq/``: the core library never imports it.
"""
