"""lmforge: pretrain, fine-tune, evaluate and serve LLMs from one YAML file.

    lmforge create-model tiny-qwen2 models/tiny
    lmforge train examples/sft_lora.yaml model_name_or_path=models/tiny
"""

__version__ = "0.1.0"
