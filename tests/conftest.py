import os

# Before any Hugging Face import: tests never reach the Hub (a miss would retry for ~23 s).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
