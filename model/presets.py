"""The reference model's size presets, in a module of their own so that the command line can list them
without importing torch."""

# Presets: a debug model for tests (torchtitan's llama3 debugmodel), `tiny` for CPU training in minutes,
# `small` and `base` (about 100M parameters with a 16k-24k joint vocabulary) for a GPU.
PRESETS: dict[str, dict] = {
    "debug": {"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 256, "grid_positions": 64},
    "tiny": {"dim": 256, "n_layers": 6, "n_heads": 8, "max_seq_len": 512, "grid_positions": 64},
    "small": {"dim": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 1024, "grid_positions": 64},
    "base": {"dim": 768, "n_layers": 12, "n_heads": 12, "max_seq_len": 2048, "grid_positions": 64},
}
