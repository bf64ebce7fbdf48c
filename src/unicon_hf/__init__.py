"""unicon_hf: UNICON continual learning for 3D medical foundation models on the Hugging Face stack."""

__version__ = "0.1.0"
