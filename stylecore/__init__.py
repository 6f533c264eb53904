"""stylecore: the StyleNet core (Gatys et al. 2015) in TensorFlow 2, without Prefect or boto3."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU hosts) is noise for our users; real
# failures still surface as Python exceptions, and the batch logs which devices it uses.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
