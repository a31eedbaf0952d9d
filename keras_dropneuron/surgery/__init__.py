"""Model surgery: rebuild a pruned model physically smaller."""

from keras_dropneuron.surgery.report import SlimReport
from keras_dropneuron.surgery.slim import slim_model

__all__ = ["SlimReport", "slim_model"]
