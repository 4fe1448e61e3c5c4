"""Pure arithmetic with no torch state: FLOPs per token, peak FLOP/s, loss chunk sizes, KV-cache bytes. Planner and train share it."""
