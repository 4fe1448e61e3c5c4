"""Memory per device of a training setup: weights, gradients, optimizer states, activations, loss buffers.

    shape = load_shape("config.json", AdapterArguments(finetuning_type="full"))
    plan = estimate_memory(shape, Setup(seq_len=2048, micro_batch=4, dtype="bf16", zero=2, devices=8))
    plan.total, plan.weights / shape.total_params    # bytes per device; bytes per parameter

Bytes per parameter, the ZeRO paper's accounting (Rajbhandari et al. 2020) for mixed-precision Adam:

* DeepSpeed (`zero` set, bf16/fp16): the model lives in half precision: weights 2, gradients 2, and the
  optimizer keeps an fp32 master copy plus Adam's two fp32 moments: 4 + 8 = 12. Total 16 bytes per
  trainable parameter. ZeRO-1 divides the 12 by the device count, ZeRO-2 also the gradients
  (2 + 14/N), ZeRO-3 also the weights (16/N), plus the gathered layers ZeRO-3 works on.
* HF Trainer without DeepSpeed (DDP or one device, `bf16: true`): trainable weights stay fp32 and autocast
  runs the matmuls in bf16: weights 4, gradients 4, Adam 8, again 16 bytes, plus a bf16 copy of each
  matmul weight made in forward and kept for backward (counted with the activations). With more than one
  device DDP keeps its own gradient buckets, one more gradient-sized buffer. Frozen weights (LoRA base,
  frozen layers) load in the checkpoint's half dtype on GPUs and in fp32 on CPUs (lmforge's loader).

* QLoRA (`quantization_bit`): bitsandbytes stores every nn.Linear of the decoder layers in 4 or 8 bits; the
  embeddings, norms and lm_head stay as loaded. 4-bit: half a byte per weight plus one fp32 absmax per block of
  64 (4/64 byte), or with double quantization one 8-bit absmax per 64 and an fp32 one per 256 blocks
  (1/64 + 4/16384 byte): 0.5159 bytes per weight. 8-bit: one byte plus an fp32 scale per output row (counted as
  4 / hidden_size per weight).

* Adapter variants that change nothing here: LoRA+ (`loraplus_lr_ratio`) only gives B its own learning rate,
  with the same parameters and Adam states; PiSSA (`pissa_init`) has LoRA's shapes (its one-off SVD at load
  time, and `pissa_convert`'s rank-2r copy at the end, happen outside the training steps); NEFTune
  (`neftune_noise_alpha`) adds one embeddings-sized noise tensor per forward, far below a layer's activations.
  LLaMA Pro (`use_llama_pro`) is freeze tuning of `freeze_trainable_layers` blocks of the expanded model:
  estimate that model's config.json with `--finetuning-type freeze --freeze-trainable-layers N` (every block
  has the same size, so which N blocks train does not change the bytes).

Activations and loss buffers come from `activations.py`; what a stage keeps besides the policy (online RL's
rollout KV cache, a reference or reward model, a value head) from `stage_memory.py` as named lines
(`MemoryPlan.extras`). Everything here is bytes on one device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, field, replace
from math import prod

from lmforge.errors import ConfigError, did_you_mean
from lmforge.planner.activations import ATTENTION_KINDS, ActivationBytes, activation_bytes
from lmforge.planner.stage_memory import REWARD_MODELS, MemoryLine, stage_lines

if TYPE_CHECKING:  # shape building needs torch; the arithmetic here does not
    from lmforge.planner.shape import ModelShape

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}

OPTIMIZER_STATE_BYTES: dict[str, float | None] = {
    # bytes of optimizer state per trainable parameter (the fp32 master copy DeepSpeed adds is not here);
    # None: factored, sized from the parameter shapes (Adafactor).
    "adamw_torch": 8, "adamw_torch_fused": 8, "adamw": 8, "adam": 8, "paged_adamw_32bit": 8,
    "adamw_8bit": 2, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2,
    "lion_32bit": 4, "lion_8bit": 1, "paged_lion_32bit": 4, "paged_lion_8bit": 1,
    "rmsprop": 4, "adagrad": 4, "sgd": 0, "adafactor": None,
    # the use_* optimizers (train/optimizers): sized from the shapes by `_memory_saving_state_bytes`
    "galore": None, "apollo": None, "adam_mini": None, "badam": None, "muon": None,
}
MEMORY_SAVING = ("galore", "apollo", "adam_mini", "badam", "muon")
OFFLOAD = ("none", "optimizer", "all")


@dataclass(frozen=True)
class Setup:
    """How the model is trained: the `lmforge estimate` options (see `--help` for each)."""

    seq_len: int = 2048
    micro_batch: int = 1
    dtype: str = "bf16"
    optimizer: str = "adamw_torch"
    optimizer_rank: int = 16
    """galore_rank / apollo_rank: the rank of the projected optimizer states."""
    gradient_checkpointing: bool = False
    zero: int | None = None
    offload: str = "none"
    devices: int = 1
    attention: str = "sdpa"
    device_type: str = "cuda"
    supervised_fraction: float = 1.0
    loss_chunk: int | None = None
    """Tokens per chunk of the chunked loss; None: what the trainer picks for the device type and vocabulary."""
    quantization_bit: int | None = None
    """QLoRA: the decoder layers' linear weights stored in 4 or 8 bits (bitsandbytes)."""
    double_quantization: bool = True
    completion_len: int = 0
    """Online RL (grpo, ppo): tokens generated per completion after a `seq_len`-token prompt. The rollout's KV
    cache holds `micro_batch` sequences of seq_len + completion_len tokens, and training runs over rows that long."""
    reference: bool = False
    """A frozen reference model is kept (under LoRA the policy with its adapter off: no extra weights)."""
    reward_model: str = "none"
    """none, same_size (a frozen second model of the policy's size) or unknown (listed, not counted)."""
    value_head: bool = False
    """A trained hidden -> 1 value head (ppo)."""

    def __post_init__(self):
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"dtype: '{self.dtype}' is not one of {', '.join(DTYPE_BYTES)}")
        if self.optimizer not in OPTIMIZER_STATE_BYTES:
            raise ConfigError(f"optimizer: '{self.optimizer}' is not known{did_you_mean(self.optimizer, OPTIMIZER_STATE_BYTES)}; "
                              f"known: {', '.join(OPTIMIZER_STATE_BYTES)}")
        if self.optimizer in ("galore", "apollo", "badam") and self.zero is not None:
            raise ConfigError(f"optimizer: {self.optimizer} does not run under DeepSpeed (config/validate.py); unset zero")
        if self.optimizer_rank < 1:
            raise ConfigError(f"optimizer rank must be at least 1, got {self.optimizer_rank}")
        if self.zero not in (None, 0, 1, 2, 3):
            raise ConfigError(f"zero: {self.zero} is not a ZeRO stage (0, 1, 2 or 3)")
        if self.offload not in OFFLOAD:
            raise ConfigError(f"offload: '{self.offload}' is not one of {', '.join(OFFLOAD)}")
        if self.offload != "none" and not self.zero:
            raise ConfigError("offload needs DeepSpeed ZeRO: set zero to 1, 2 or 3 (offload all: zero 3)")
        if self.offload == "all" and self.zero != 3:
            raise ConfigError("offload all (parameters too) needs zero 3")
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention: '{self.attention}' is not one of {', '.join(sorted(ATTENTION_KINDS))}")
        for name in ("seq_len", "micro_batch", "devices", "loss_chunk"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.quantization_bit not in (None, 4, 8):
            raise ConfigError(f"quantization_bit: {self.quantization_bit} is not 4 or 8 (bitsandbytes)")
        if self.completion_len < 0:
            raise ConfigError(f"completion_len must be at least 0, got {self.completion_len}")
        if self.reward_model not in REWARD_MODELS:
            raise ConfigError(f"reward_model: '{self.reward_model}' is not one of {', '.join(REWARD_MODELS)}")
        if not 0 < self.supervised_fraction <= 1:
            raise ConfigError(f"supervised_fraction must be in (0, 1], got {self.supervised_fraction}")

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def deepspeed(self) -> bool:
        return self.zero is not None


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes on one device (and on the host, for offloaded states) for one setup."""

    setup: Setup
    weights: float
    gradients: float
    optimizer: float
    activations: ActivationBytes
    gathered: float = 0.0
    """ZeRO-3: the parameters gathered for the layers being computed (two of the largest at a time)."""
    host: float = 0.0
    """Offloaded optimizer states / parameters, in host memory (per device's share)."""
    notes: tuple[str, ...] = field(default=())
    extras: tuple[MemoryLine, ...] = field(default=())
    """What the stage keeps besides the policy's training state, one named line each (stage_memory.py)."""

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.gathered + self.activations.total
                + sum(line.bytes for line in self.extras))

    @property
    def static(self) -> float:
        """What does not grow with the micro-batch."""
        return (self.weights + self.gradients + self.optimizer + self.gathered + self.activations.weight_copies
                + sum(line.bytes for line in self.extras if not line.per_row))


def quantized_bytes_per_weight(bits: int, double_quantization: bool = True, block: int = 64,
                               in_features: int | None = None) -> float:
    """Bytes per weight of a bitsandbytes-quantized linear layer, block scales included (see the module doc);
    8-bit: its fp32 scale per output row spread over `in_features` weights (the hidden size for most layers)."""
    if bits == 8:
        return 1.0 + (4 / in_features if in_features else 0.0)
    scales = (1 / block + 4 / (block * 256)) if double_quantization else 4 / block
    return 0.5 + scales


def optimizer_state_bytes(shape: ModelShape, optimizer: str, rank: int = 16) -> float:
    """Optimizer state bytes for all trainable parameters (no master copy); `rank`: GaLore's / APOLLO's."""
    per_param = OPTIMIZER_STATE_BYTES[optimizer]
    if per_param is not None:
        return per_param * shape.trainable_params
    if optimizer in MEMORY_SAVING:
        return _memory_saving_state_bytes(shape, optimizer, rank)
    # Adafactor keeps fp32 row and column second moments for matrices and a full one for vectors.
    return sum(4 * (s[-2] + s[-1]) if len(s) >= 2 else 4 * prod(s) for s in shape.trainable_shapes)


def _memory_saving_state_bytes(shape: ModelShape, optimizer: str, rank: int) -> float:
    """fp32 states of the use_* optimizers, checked against the measured states (tests/planner).

    The matrices GaLore / APOLLO project and Muon orthogonalises are the trainable 2-D weights that are not the
    vocabulary's (embeddings and output head keep AdamW's 8 bytes, as does every vector). For an [m, n] matrix
    with r = min(rank, m, n):

    * GaLore: both moments of the projected gradient, 2 r max(m, n), plus the projection, a slice of the SVD
      factor whose whole min(m, n)^2 storage the slice keeps alive (fp32 weights: galore-torch returns a view).
    * APOLLO: the same moments, plus its random projection, r min(m, n).
    * Muon: one momentum buffer, m n.
    * Adam-mini: the first moment in full plus one second moment per output row (per head for queries and
      keys: fewer), 4 (m n + m); vectors are counted at Adam's 8 bytes (biases are; norms keep less).
    * BAdam: Adam's 8 bytes for one decoder layer only, the active block (plus, outside these states, an fp32
      copy of that block and its gradient: 8 bytes per block parameter).
    """
    if optimizer == "badam":
        return 8 * min(shape.largest_layer_params, shape.trainable_params)
    total = 0.0
    for s in shape.trainable_shapes:
        numel = prod(s)
        if len(s) != 2 or (shape.vocab_size in s and optimizer != "adam_mini"):
            total += 8 * numel  # AdamW (Adam-mini keeps one second moment per embedding row too)
            continue
        m, n = s
        r = min(rank, m, n)
        if optimizer == "galore":
            total += 4 * (2 * r * max(m, n) + min(m, n) ** 2)
        elif optimizer == "apollo":
            total += 4 * (2 * r * max(m, n) + r * min(m, n))
        elif optimizer == "muon":
            total += 4 * numel
        else:  # adam_mini
            total += 4 * (numel + m)
    return total


def estimate_memory(shape: ModelShape, setup: Setup) -> MemoryPlan:
    """Per-device memory of training `shape` with `setup` (bytes; see the module docstring)."""
    if setup.loss_chunk is None:
        from lmforge.arith.loss_chunks import default_chunk_size

        setup = replace(setup, loss_chunk=default_chunk_size(shape.vocab_size, setup.device_type))
    half = setup.compute_bytes == 2
    trainable, frozen = shape.trainable_params, shape.frozen_params
    states = optimizer_state_bytes(shape, setup.optimizer, setup.optimizer_rank)
    notes = []
    # QLoRA: the frozen linears of the layers in 4 / 8 bits; everything else frozen as loaded
    quantized = shape.layer_matmul_params if setup.quantization_bit else 0
    quantized_bytes = quantized * quantized_bytes_per_weight(setup.quantization_bit, setup.double_quantization,
                                                             in_features=shape.hidden_size) if quantized else 0.0
    if quantized:
        notes.append(f"{setup.quantization_bit}-bit base: {quantized:,} layer weights at "
                     f"{quantized_bytes / quantized:.4f} bytes each")
    if setup.deepspeed:
        weight_bytes = setup.compute_bytes
        weights = weight_bytes * (trainable + frozen - quantized) + quantized_bytes
        gradients = weight_bytes * trainable
        optimizer = states + (4 * trainable if half else 0)  # fp32 master weights
        weights_in_compute = True
    else:
        frozen_bytes = 2 if (half and setup.device_type != "cpu") else 4
        weights = 4 * trainable + frozen_bytes * (frozen - quantized) + quantized_bytes
        gradients = 4 * trainable
        optimizer = states
        weights_in_compute = not half or (shape.lora_rank > 0 and frozen_bytes == 2)
        if setup.devices > 1:
            gradients *= 2
            notes.append("DDP: gradients counted twice (param.grad and DDP's bucket buffers)")
    n = setup.devices
    host = 0.0
    if setup.deepspeed and setup.zero >= 1:
        optimizer /= n
    if setup.deepspeed and setup.zero >= 2:
        gradients /= n
    gathered = 0.0
    if setup.deepspeed and setup.zero == 3:
        weights /= n
        largest = max(shape.largest_layer_params, shape.vocab_size * shape.hidden_size)
        gathered = 2 * largest * setup.compute_bytes
    if setup.offload in ("optimizer", "all"):
        host += optimizer
        optimizer = 0.0
    if setup.offload == "all":
        host += weights
        weights = 0.0
    activations = activation_bytes(
        shape,
        micro_batch=setup.micro_batch,
        seq_len=setup.seq_len + setup.completion_len,  # online RL trains on prompt + completion
        compute_bytes=setup.compute_bytes,
        weights_in_compute_dtype=weights_in_compute,
        attention=setup.attention,
        checkpointing=setup.gradient_checkpointing,
        supervised_fraction=setup.supervised_fraction,
        loss_chunk=setup.loss_chunk,
    )
    return MemoryPlan(setup, weights, gradients, optimizer, activations, gathered, host, tuple(notes),
                      extras=stage_lines(shape, setup))


def max_micro_batch(shape: ModelShape, setup: Setup, device_bytes: float, limit: int = 1 << 16) -> int:
    """The largest micro-batch whose estimate fits in `device_bytes` (0 if not even one row fits)."""
    if estimate_memory(shape, replace(setup, micro_batch=1)).total > device_bytes:
        return 0
    low, high = 1, limit
    while low < high:  # memory grows with the micro-batch, so bisect
        mid = (low + high + 1) // 2
        if estimate_memory(shape, replace(setup, micro_batch=mid)).total <= device_bytes:
            low = mid
        else:
            high = mid - 1
    return low
