"""SynthER: Synthetic Experience Replay (Lu, Ball, Teh, Parker-Holder, 2023). See README.md."""
