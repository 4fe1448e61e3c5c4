"""lmforge: pretrain, fine-tune, evaluate and serve LLMs from one YAML file.

    lmforge create-model tiny-qwen2 models/tiny
    lmforge train examples/sft_lora.yaml model_name_or_path=models/tiny
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend warns, when peft imports it (every lmforge command, once bitsandbytes is installed),
# that an optional kernel package fetched from the Hugging Face hub is missing; the torch fallback it then uses is
# what runs, and offline nothing can be done about it. Errors from that module still show.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
