"""Model surgery: rebuild a pruned model physically smaller."""

from keras_dropneuron.surgery.report import SlimReport
from keras_dropneuron.surgery.slim import slim_model
from keras_dropneuron.surgery.verify import SlimVerificationError

__all__ = ["SlimReport", "SlimVerificationError", "slim_model"]
