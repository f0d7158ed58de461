"""Sequence encoders: read a window of featurised events, emit a sequence embedding and a score."""

from ecseq.encoders.models import BACKBONES, LSTMEncoder, SequenceEncoder, TransformerEncoder, build_encoder
from ecseq.encoders.training import EncoderTrainConfig, embed_rows, train_encoder

__all__ = ["BACKBONES", "EncoderTrainConfig", "LSTMEncoder", "SequenceEncoder", "TransformerEncoder",
           "build_encoder", "embed_rows", "train_encoder"]
