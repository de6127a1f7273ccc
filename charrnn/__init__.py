"""charrnn: character-level language models (stacked LSTM/GRU/RNN, and a Transformer baseline) you can train on a laptop CPU."""

from .errors import CharrnnError
from .models import GPT, CharRNN, ModelConfig
from .sampler import SampleConfig, Sampler
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, Trainer

__all__ = ["GPT", "CharRNN", "CharTokenizer", "CharrnnError", "ModelConfig", "SampleConfig", "Sampler", "TrainConfig", "Trainer"]
__version__ = "0.1.0"
