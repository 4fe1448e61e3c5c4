"""Pure arithmetic with no torch state: FLOPs per token, peak FLOP/s, loss chunk sizes. Planner and train share it."""
