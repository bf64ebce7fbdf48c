"""unicon_hf: UNICON continual learning for 3D medical foundation models on the Hugging Face stack.

Importing the package registers the UNICON classes with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .configuration_unicon import UniconConfig, UniconVisionConfig
from .errors import UserInputError
from .image_processing_unicon import UniconImageProcessor
from .inference import predict
from .modeling_unicon import UniconModel, UniconPreTrainedModel, UniconVisionModel
from .processing_unicon import UniconProcessor

__version__ = "0.1.0"

AutoConfig.register(UniconConfig.model_type, UniconConfig, exist_ok=True)
AutoConfig.register(UniconVisionConfig.model_type, UniconVisionConfig, exist_ok=True)
AutoModel.register(UniconConfig, UniconModel, exist_ok=True)
AutoModel.register(UniconVisionConfig, UniconVisionModel, exist_ok=True)
AutoImageProcessor.register(UniconConfig, slow_image_processor_class=UniconImageProcessor, exist_ok=True)
AutoProcessor.register(UniconConfig, UniconProcessor, exist_ok=True)

__all__ = [
    "UniconConfig",
    "UniconImageProcessor",
    "UniconProcessor",
    "UniconModel",
    "UniconPreTrainedModel",
    "UniconVisionConfig",
    "UniconVisionModel",
    "UserInputError",
    "predict",
]
