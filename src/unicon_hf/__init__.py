"""unicon_hf: UNICON continual learning for 3D medical foundation models on the Hugging Face stack.

Importing the package registers the UNICON classes with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel

from .configuration_unicon import UniconConfig, UniconVisionConfig
from .errors import UserInputError
from .modeling_unicon import UniconModel, UniconPreTrainedModel, UniconVisionModel

__version__ = "0.1.0"

AutoConfig.register(UniconConfig.model_type, UniconConfig, exist_ok=True)
AutoConfig.register(UniconVisionConfig.model_type, UniconVisionConfig, exist_ok=True)
AutoModel.register(UniconConfig, UniconModel, exist_ok=True)
AutoModel.register(UniconVisionConfig, UniconVisionModel, exist_ok=True)

__all__ = [
    "UniconConfig",
    "UniconModel",
    "UniconPreTrainedModel",
    "UniconVisionConfig",
    "UniconVisionModel",
    "UserInputError",
]
