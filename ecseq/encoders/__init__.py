"""Sequence encoders: read a window of featurised events, emit a sequence embedding and a score.

`models` is what scoring loads; `training` fits them (offline and in the builder only).
"""
