"""charrnn: character-level language models (stacked LSTM/GRU/RNN) you can train on a laptop CPU."""

from .errors import CharrnnError
from .models import CharRNN, ModelConfig
from .sampler import SampleConfig, Sampler
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, Trainer

__all__ = ["CharRNN", "CharTokenizer", "CharrnnError", "ModelConfig", "SampleConfig", "Sampler", "TrainConfig", "Trainer"]
__version__ = "0.1.0"
